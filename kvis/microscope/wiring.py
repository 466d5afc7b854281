"""What feeds a unit and what it feeds: the strength of the weights that join the units of two
spatial layers, the first step of a circuit (Olah et al. 2020, "Zoom In: An Introduction to
Circuits", where a unit is read through the units of the layer before it and their weights).

Between two layers joined by one chain of layers, each conv contributes the L2 norm of its
kernel slice from input unit i to output unit j over the kernel's positions; layers that act on
each unit alone (pooling, activations, batch normalization, dropout, padding) pass units 1:1;
several convs compose by matrix product, the sum over paths of the products of norms. Where the
chain merges (residual blocks, Concatenate) or a layer mixes units otherwise (Dense, attention),
the weights alone do not say it, and there is no wiring.
"""

from dataclasses import dataclass

import keras
import numpy as np

from kvis.core.anatomy import spatial_node
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph

PURPOSE = "the wiring"
# Layers that act on each unit alone (channels-last: kvis refuses channels-first models).
_UNIT_WISE = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.ReLU,
              keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU,
              keras.layers.BatchNormalization, keras.layers.Normalization,
              keras.layers.Rescaling, keras.layers.Dropout, keras.layers.GaussianNoise,
              keras.layers.GaussianDropout, keras.layers.AlphaDropout,
              keras.layers.ZeroPadding2D, keras.layers.Cropping2D, keras.layers.UpSampling2D,
              keras.layers.Identity, keras.layers.Activation)
_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


@dataclass(frozen=True)
class Wiring:
    """How the units of one layer are fed by those of an earlier one.

    Attributes:
        layer: the layer's path.
        source: the earlier layer's path, or the model input's name.
        convs: the paths of the conv layers on the chain from `source` to `layer`, in order.
        strength: float32 (C_source, C_layer) >= 0, the sum over paths of the products of
            the kernel norms from unit i of `source` to unit j of `layer` (the identity
            where no conv lies between them).
    """

    layer: str
    source: str
    convs: tuple
    strength: np.ndarray


def wiring(model, source, layer):
    """The weight strength from each unit of `source` to each unit of `layer`.

    Args:
        model: a Keras model.
        source: a spatial layer path before `layer`, or None for the model input.
        layer: a spatial layer path.

    Returns:
        A `Wiring`, or None where the chain from `source` to `layer` merges (a layer with
        several inputs: residual blocks, Concatenate) or holds a layer that mixes units
        otherwise (Dense, Softmax, any other layer or operation).

    Raises:
        KvisError: an unknown or non-spatial layer, or a `source` that does not come before
            `layer`.

    Example:
        >>> found = wiring(model, "block3_pool", "block4_conv1")
        >>> strongest_links(found.strength, 7)        # the units that feed unit 7 most
    """
    graph = model_graph(model)
    end = spatial_node(graph, layer, PURPOSE)
    origin = None if source is None else spatial_node(graph, source, PURPOSE)
    start = graph.input if origin is None else origin.output
    # A nested model's node stands for its last inner layer (the same output tensor).
    chain = _chain(graph, start, graph.nodes[graph.producer(end.output)])
    if chain is None or not all(_passes_units(node.layer) for node in chain):
        return None
    strength = np.eye(start.shape[-1])
    for node in chain:
        if isinstance(node.layer, _CONV):
            strength = strength @ conv_strength(node.layer)
    return Wiring(end.path, start.name if origin is None else origin.path,
                  tuple(node.path for node in chain if isinstance(node.layer, _CONV)),
                  strength.astype(np.float32))


def conv_strength(layer):
    """float64 (C_in, C_out): the L2 norm over the kernel's positions of each conv layer's
    weights from input unit i to output unit j; 0 where no weight joins them (other groups
    of a grouped Conv2D, other units of a DepthwiseConv2D).

    Args:
        layer: a `keras.layers.Conv2D` (kernel (kh, kw, C_in / groups, C_out)),
            `DepthwiseConv2D` (kernel (kh, kw, C_in, multiplier); output unit c * multiplier
            + q comes from input unit c) or `SeparableConv2D` (the depthwise norms times the
            absolute pointwise weights).
    """
    if isinstance(layer, keras.layers.SeparableConv2D):
        pointwise = np.abs(np.asarray(layer.pointwise_kernel)[0, 0])
        return _depthwise(np.asarray(layer.depthwise_kernel)) @ pointwise
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return _depthwise(np.asarray(layer.kernel))
    norms = _norms(np.asarray(layer.kernel))  # (C_in / groups, C_out)
    per_group, outputs = norms.shape
    step = outputs // layer.groups
    strength = np.zeros((per_group * layer.groups, outputs))
    for group in range(layer.groups):
        rows = slice(group * per_group, (group + 1) * per_group)
        columns = slice(group * step, (group + 1) * step)
        strength[rows, columns] = norms[:, columns]
    return strength


def strongest_links(strength, unit, count=8, *, incoming=True):
    """The units most strongly joined to one unit, strongest first (ties: lower index first);
    units joined with strength 0 are left out.

    Args:
        strength: (C_source, C_layer), a `Wiring.strength`.
        unit: a unit of the layer (`incoming`: what feeds it, column `strength[:, unit]`) or
            of the source (not `incoming`: what it feeds, row `strength[unit, :]`).
        count: at most how many links.
        incoming: see `unit`.

    Returns:
        `[(other unit, strength)]`, ints and floats, at most `count`.

    Example:
        >>> strongest_links(found.strength, 7, 3)
        [(12, 0.91), (3, 0.88), (40, 0.52)]
    """
    values = np.asarray(strength)[:, unit] if incoming else np.asarray(strength)[unit, :]
    order = np.argsort(-values, kind="stable")[:count]
    return [(int(i), float(values[i])) for i in order if values[i] > 0]


def _chain(graph, start, end):
    """The nodes from the tensor `start` to the node `end`, in order: None where one has
    several inputs.

    Raises:
        KvisError: `start` is not on the way to `end`.
    """
    chain, node = [], end
    while True:
        if len(node.inputs) != 1:
            return None
        chain.append(node)
        if node.inputs[0] is start:
            return chain[::-1]
        if node.inputs[0] is graph.input:
            raise KvisError(f"{PURPOSE}: {graph.producer(start)!r} does not come before "
                            f"{end.path!r} in model {graph.name!r}")
        node = graph.nodes[graph.producer(node.inputs[0])]


def _passes_units(layer):
    """Whether a layer maps units to units by its weights alone: a conv or a unit-wise layer,
    without a softmax over the units."""
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return isinstance(layer, (*_CONV, *_UNIT_WISE)) and activation != "softmax"


def _depthwise(kernel):
    """float64 (C, C * multiplier) of a depthwise kernel (kh, kw, C, multiplier)."""
    norms = _norms(kernel)
    units, multiplier = norms.shape
    strength = np.zeros((units, units * multiplier))
    strength[np.repeat(np.arange(units), multiplier), np.arange(units * multiplier)] = \
        norms.ravel()
    return strength


def _norms(kernel):
    """float64 (a, b): the L2 norm of a kernel (kh, kw, a, b) over its positions."""
    return np.sqrt(np.sum(np.square(kernel, dtype=np.float64), axis=(0, 1)))
