"""Receptive fields: which input pixels each unit of a spatial layer sees.

Per axis a field is a size r, an effective stride j and an offset c, the centre of unit 0 in
input pixels; unit i sees pixels c + i*j - (r-1)/2 ... c + i*j + (r-1)/2 (Araujo et al.,
"Computing Receptive Fields of Convolutional Neural Networks", Distill 2019). Where branches
merge (Add, Concatenate, `x * y`) the field is the union of the branches' fields.

Every node of the graph is followed, operations that are not layers (`x + 1`, `keras.ops.mean`)
included: a node that keeps the spatial size keeps the field (elementwise ops, ops with
constants, normalization); a node that leaves one unit (global pooling, a mean over rows and
columns, Flatten, Reshape to a vector) sees the whole of its input. A global gate, one value
per channel broadcast over a larger map (squeeze-and-excitation), scales channels but has no
location: a field is the input patch a unit's pattern lies in, so the gate is left out of it.
"""

import math
from dataclasses import dataclass

import keras

from kvis.core.graph import model_graph

_WINDOWED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
             keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a spatial layer, per axis `(rows, cols)`, in input pixels.

    Attributes:
        size: extent of one unit's field, padding included.
        stride: input pixels between neighbouring units.
        offset: centre of unit (0, 0); negative or fractional values are possible.
    """

    size: tuple
    stride: tuple
    offset: tuple

    def box(self, row, col):
        """Input pixels seen by unit (row, col): `(top, left, bottom, right)`, inclusive.

        The box is not clipped to the image: parts outside it fall on padding.
        """
        (top, bottom), (left, right) = (
            (c + i * j - (r - 1) / 2, c + i * j + (r - 1) / 2)
            for i, r, j, c in zip((row, col), self.size, self.stride, self.offset)
        )
        return math.floor(top), math.floor(left), math.floor(bottom), math.floor(right)

    def window(self, row, col, image_size):
        """A crop of one size for every unit: the field's box, at most the image's size, moved
        inside the image where it sticks out. `(top, left, bottom, right)`, inclusive.

        Args:
            row, col: the unit.
            image_size: the input's `(height, width)`.
        """
        box = self.box(row, col)
        window = []
        for start, size, limit in ((box[0], self.size[0], image_size[0]),
                                   (box[1], self.size[1], image_size[1])):
            extent = min(size, limit)
            window.append(min(max(start, 0), limit - extent))
        (top, left), extents = window, [min(s, n) for s, n in zip(self.size, image_size)]
        return top, left, top + extents[0] - 1, left + extents[1] - 1


def receptive_fields(model):
    """Receptive field of every layer of `model` that keeps a spatial layout.

    Returns:
        `{path: ReceptiveField or None}` for every layer path (operation nodes included);
        None where the output is not spatial (Dense, Flatten, global pooling without
        keepdims) or a node changes the spatial size in a way kvis does not follow
        (UpSampling2D, Resizing, a transposed convolution).
    """
    g = model_graph(model)
    fields = {id(g.input): ReceptiveField((1, 1), (1, 1), (0.0, 0.0))}
    result = {}
    for path, node in g.nodes.items():
        if id(node.output) not in fields:
            fields[id(node.output)] = _propagate(node, [fields.get(id(t)) for t in node.inputs])
        result[path] = fields[id(node.output)] if _spatial(node.output) else None
    return result


def _propagate(node, fields):
    """The field of a node's output; kept internally for non-spatial outputs too (the whole
    of what they were computed from), so that a reshape back to (1, 1, c) finds it."""
    layer, output = node.layer, node.output
    if not isinstance(output, keras.KerasTensor):
        return None
    # A one-unit input of a merge is broadcast over the others' positions (a gate); a lone
    # input is not, even one unit padded to a larger map.
    located = [(t, f) for t, f in zip(node.inputs, fields)
               if len(fields) == 1 or not _broadcast(t, output)]
    if not located or any(f is None for _, f in located):
        return None
    if len(located) > 1:
        return _union(located, output)
    ((inp, field),) = located
    if _spatial(inp) and _spatial(output):
        if isinstance(layer, _WINDOWED):
            return _windowed(layer, field, inp.shape[1:3])
        if isinstance(layer, keras.layers.ZeroPadding2D):
            return _shifted(field, [-before for before, _ in layer.padding])
        if isinstance(layer, keras.layers.Cropping2D):
            return _shifted(field, [before for before, _ in layer.cropping])
        if tuple(inp.shape[1:3]) == tuple(output.shape[1:3]):
            return field
    if _one_unit(output):
        return _whole(field, inp)
    return None


def _spatial(tensor):
    return len(getattr(tensor, "shape", ())) == 4


def _one_unit(tensor):
    """Whether `tensor` is one unit: not spatial, or spatial with one row and one column."""
    return not _spatial(tensor) or tuple(tensor.shape[1:3]) == (1, 1)


def _broadcast(tensor, output):
    """Whether `tensor` is broadcast over the rows and columns of a larger spatial output."""
    return _one_unit(tensor) and not _one_unit(output)


def _whole(field, tensor):
    """The field of one unit that sees every unit of `tensor` (global pooling)."""
    if not _spatial(tensor) or tuple(tensor.shape[1:3]) == (1, 1):
        return field
    if None in tensor.shape[1:3]:
        return None
    size, stride, offset = zip(*((r + (n - 1) * j, j * n, c + (n - 1) / 2 * j) for r, j, c, n
                                 in zip(field.size, field.stride, field.offset, tensor.shape[1:3])))
    return ReceptiveField(size, stride, offset)


def _windowed(layer, field, input_size):
    kernel = getattr(layer, "kernel_size", None) or layer.pool_size
    strides = layer.strides or kernel
    dilation = getattr(layer, "dilation_rate", (1, 1))
    size, stride, offset = [], [], []
    axes = zip(field.size, field.stride, field.offset, kernel, strides, dilation, input_size)
    for r, j, c, k, s, d, n in axes:
        extent = d * (k - 1) + 1
        pad = _padding_before(layer.padding, extent, s, n)
        size.append(r + (extent - 1) * j)
        stride.append(j * s)
        offset.append(c + ((extent - 1) / 2 - pad) * j)
    return ReceptiveField(tuple(size), tuple(stride), tuple(offset))


def _padding_before(padding, extent, stride, n):
    """Zero rows/cols TensorFlow adds before the input: none for 'valid', half for 'same'."""
    if padding == "valid":
        return 0
    total = extent - stride if n is None else (math.ceil(n / stride) - 1) * stride + extent - n
    return max(total, 0) // 2


def _shifted(field, pixels):
    offset = tuple(c + p * j for c, p, j in zip(field.offset, pixels, field.stride))
    return ReceptiveField(field.size, field.stride, offset)


def _union(located, output):
    """The union of the inputs' fields. Over a spatial output the inputs must have its size
    and one stride; over one unit no neighbour is a stride away: the largest is kept."""
    fields = [f for _, f in located]
    if not _one_unit(output) and (len({f.stride for f in fields}) != 1 or {
            tuple(t.shape[1:3]) for t, _ in located} != {tuple(output.shape[1:3])}):
        return None
    size, offset = [], []
    for axis in range(2):
        low = min(f.offset[axis] - (f.size[axis] - 1) / 2 for f in fields)
        high = max(f.offset[axis] + (f.size[axis] - 1) / 2 for f in fields)
        size.append(round(high - low) + 1)
        offset.append((low + high) / 2)
    stride = tuple(max(f.stride[axis] for f in fields) for axis in range(2))
    return ReceptiveField(tuple(size), stride, tuple(offset))
