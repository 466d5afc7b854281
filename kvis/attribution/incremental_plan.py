"""Where incremental occlusion computes (`kvis.attribution.incremental`): for every occluder
position, the window of each layer's map that the occluder changes, one size per layer (a
window that would cross a border is moved inside), and where the graph goes back to full maps
(the *fallback*): where a window covers `FULL_AT` of its map, or at a layer it cannot window
(Flatten, Dense, global pooling, a gate broadcast over the map, an average pool that pads).
With Krypton's projective-field threshold a window's side stops growing at a fraction of its
map's side, centred where the change is.
"""

from dataclasses import dataclass

import keras
import numpy as np

from kvis.core.graph import model_graph

# A window covering this fraction of its map's area is computed as the whole map instead.
FULL_AT = 0.5

_SLIDING = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
            keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_POINTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
              keras.layers.ELU, keras.layers.Softmax, keras.layers.BatchNormalization,
              keras.layers.LayerNormalization, keras.layers.Rescaling,
              keras.layers.Normalization, keras.layers.Dropout, keras.layers.SpatialDropout2D,
              keras.layers.GaussianNoise, keras.layers.GaussianDropout,
              keras.layers.ActivityRegularization)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
           keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)
FULL = "full"  # a step or tensor computed whole


@dataclass(frozen=True)
class _Step:
    """How one node of the graph runs for the occluded positions.

    kind: "full", "pointwise", "shift" (zero padding), "sliding" or "merge"; size: the window
    (h, w); index: its column of the plan's offsets; inputs: per input tensor, its window
    `(index, size)`, "full", or None where the occluder does not change it; geometry: for
    "sliding", per axis (extent, stride, padding before, padding after), and `fill` the
    padding's value.
    """

    path: str
    kind: str
    size: tuple = ()
    index: int = -1
    inputs: tuple = ()
    geometry: tuple = ()
    fill: float = 0.0


@dataclass(frozen=True)
class Plan:
    """Where each layer's window lies for every occluder position.

    Attributes:
        steps: the nodes the occluder changes, in graph order, up to the last one needed.
        offsets: int32 (N, L, 2) per position, the top-left corner of window l in its map.
        work: the fraction of a full pass's multiply-adds the incremental pass does.
        fallback: where the graph goes back to full maps and why ("" where it never does).
        bases: the paths whose unoccluded maps the pass reads ("" is the input).
    """

    steps: tuple
    offsets: np.ndarray
    work: float
    fallback: str
    bases: tuple

    @property
    def key(self):
        """What the compiled pass depends on: each step's kind and window sizes."""
        return tuple((s.path, s.kind, s.size, s.index, s.inputs) for s in self.steps)


def plan(model, corners, size, needed, *, threshold=None):
    """The windows of every layer for occluders of side `size` at `corners`.

    Args:
        model: a Keras model.
        corners: int (N, 2) each occluder's top-left pixel, inside the image.
        size: the occluder's side in pixels.
        needed: the layer paths whose outputs the pass must give.
        threshold: None (exact), or a fraction in (0, 1]: no window side grows past that
            fraction of its map's side (Krypton's projective-field threshold).

    Returns:
        A `Plan`.
    """
    graph = model_graph(model)
    order = [n for n in graph.nodes.values() if not n.is_container]
    wanted = {id(graph.nodes[path].output) for path in needed}
    last = max(i for i, n in enumerate(order)
               if any(id(t) in wanted for t in keras.tree.flatten(n.output)))
    order = order[:last + 1]
    states = {id(graph.input): (0, (size, size))}
    offsets, steps, fallback = [np.asarray(corners, np.int64)], [], ""
    bases = {id(graph.input): ""}
    done = total = 0.0
    for node in order:
        ins = tuple(states.get(id(t)) for t in node.inputs)
        cost = _cost(node)
        total += cost
        if all(s is None for s in ins):
            continue
        step = _windowed(node, ins, offsets, threshold)
        if isinstance(step, str):
            fallback = fallback or f"{node.path} ({step})"
            step = _Step(node.path, FULL, inputs=ins)
        done += cost if step.kind == FULL else cost * np.prod(step.size) / np.prod(
            node.output.shape[1:3])
        steps.append(step)
        for tensor, state in zip(node.inputs, ins):
            if step.kind in ("sliding", "merge") or (step.kind == FULL and state != FULL):
                bases.setdefault(id(tensor), "" if tensor is graph.input else
                                 graph.producer(tensor))
        for tensor in keras.tree.flatten(node.output):
            states[id(tensor)] = FULL if step.kind == FULL else (step.index, step.size)
    for path in needed:
        bases.setdefault(id(graph.nodes[path].output), graph.nodes[path].path)
    return Plan(tuple(steps), np.stack(offsets, 1).astype(np.int32), done / max(total, 1.0),
                fallback, tuple(dict.fromkeys(bases.values())))


def floats_per_position(model, plan_):
    """Floats one occluder position keeps while the incremental pass runs: its patches, the
    crops they are computed from, and the full maps after the fallback."""
    nodes = model_graph(model).nodes
    total = 0
    for step in plan_.steps:
        node = nodes[step.path]
        if step.kind == FULL:
            total += sum(int(np.prod(t.shape[1:])) for t in keras.tree.flatten(node.output))
            continue
        channels = node.output.shape[-1]
        inputs = sum(t.shape[-1] for t in node.inputs)
        crop = [(n - 1) * s + e for n, (e, s, _, _) in zip(step.size, step.geometry)] \
            if step.geometry else step.size
        total += int(np.prod(step.size)) * channels + int(np.prod(crop)) * inputs
    return max(total, 1)


def _windowed(node, ins, offsets, threshold):
    """The step of a node some of whose inputs the occluder changes, or why it runs in full:
    an input already full, a kind kvis does not window, or a window grown too large."""
    layer, kind = node.layer, _kind(node)
    if FULL in ins:
        return "an input already full"
    if kind is None:
        return f"{type(layer).__name__} is not windowed"
    out = tuple(node.output.shape[1:3])
    if kind in ("pointwise", "shift"):
        ((index, size),) = ins
        if kind == "pointwise":
            return _Step(node.path, kind, size, index, ins)
        offsets.append(offsets[index] + [before for before, _ in layer.padding])
        return _Step(node.path, kind, size, len(offsets) - 1, ins)
    geometry = _geometry(node) if kind == "sliding" else ()
    if kind == "sliding":
        ((index, size),) = ins
        low = [-((e - 1 - c - b) // s) for (e, s, b, _), c in zip(geometry, offsets[index].T)]
        high = [(c + n - 1 + b) // s for (_, s, b, _), c, n in
                zip(geometry, offsets[index].T, size)]
    else:
        changed = [(offsets[s[0]], s[1]) for s in ins if s is not None]
        low = [np.min([o[:, a] for o, _ in changed], 0) for a in range(2)]
        high = [np.max([o[:, a] + n[a] - 1 for o, n in changed], 0) for a in range(2)]
    sides, corner = zip(*(_reach(lo, hi, n, threshold) for lo, hi, n in zip(low, high, out)))
    if np.prod(sides) >= FULL_AT * np.prod(out) and threshold is None:
        return f"its window covers at least {FULL_AT:.0%} of the map"
    offsets.append(np.stack(corner, 1))
    fill = -np.inf if isinstance(layer, keras.layers.MaxPooling2D) else 0.0
    return _Step(node.path, kind, tuple(sides), len(offsets) - 1, ins, geometry, fill)


def _kind(node):
    """How a node is windowed: "pointwise", "shift", "sliding", "merge", or None."""
    layer, output = node.layer, node.output
    if not isinstance(layer, keras.layers.Layer) or not isinstance(output, keras.KerasTensor) \
            or len(output.shape) != 4 or any(len(t.shape) != 4 for t in node.inputs):
        return None
    if isinstance(layer, _POINTWISE) and len(node.inputs) == 1 and _channel_axis(layer):
        return "pointwise"
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return "shift"
    if isinstance(layer, _SLIDING) and not (  # TensorFlow averages only the pixels it has
            isinstance(layer, keras.layers.AveragePooling2D) and layer.padding == "same"):
        return "sliding"
    merge = isinstance(layer, _MERGES) or (
        isinstance(layer, keras.layers.Concatenate) and layer.axis in (-1, 3))
    if merge and all(t.shape[1:3] == output.shape[1:3] for t in node.inputs):
        return "merge"
    return None


def _reach(low, high, length, threshold):
    """One axis of a layer's windows: the common side and each window's start, from the first
    and last unit each position changes; windows are moved inside the map."""
    low, high = np.clip(low, 0, length - 1), np.clip(high, 0, length - 1)
    changed = np.maximum(high - low + 1, 1)
    side = int(changed.max())
    if threshold is not None:
        side = min(side, max(1, int(np.ceil(threshold * length))))
    # Where the change is wider than the window (the threshold), the window sits at its centre.
    start = np.where(changed <= side, low, (low + high + 1 - side) // 2)
    return side, np.clip(start, 0, length - side)


def _geometry(node):
    """Per axis (extent, stride, padding before, padding after) of a conv or pooling layer."""
    layer, shape = node.layer, node.inputs[0].shape[1:3]
    kernel = getattr(layer, "kernel_size", None) or layer.pool_size
    dilation = getattr(layer, "dilation_rate", (1, 1))
    geometry = []
    for n, k, s, d in zip(shape, kernel, layer.strides, dilation):
        extent = d * (k - 1) + 1
        total = max((-(-n // s) - 1) * s + extent - n, 0) if layer.padding == "same" else 0
        geometry.append((extent, s, total // 2, total - total // 2))
    return tuple(geometry)


def _channel_axis(layer):
    """Whether a normalization-like layer works along channels only (pointwise in space)."""
    axis = getattr(layer, "axis", -1)
    return all(a in (-1, 3) for a in np.atleast_1d(axis if axis is not None else -1))


def _cost(node):
    """Multiply-adds of one image through a conv or Dense layer (0 for the others)."""
    layer, out = node.layer, node.output
    if isinstance(layer, keras.layers.Dense):
        return float(node.inputs[0].shape[-1] * layer.units)
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                              keras.layers.SeparableConv2D)):
        return 0.0
    taps = np.prod(layer.kernel_size) * node.inputs[0].shape[-1]
    per_unit = taps * out.shape[-1] / getattr(layer, "groups", 1) \
        if isinstance(layer, keras.layers.Conv2D) else taps * (1 + out.shape[-1])
    return float(np.prod(out.shape[1:3]) * per_unit)
