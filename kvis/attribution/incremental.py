"""Incremental occlusion: the incremental and approximate inference of Krypton (Nakandala, Kumar
& Papakonstantinou, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", SIGMOD 2019).

An occluder changes only a window of each layer's maps. The unoccluded image runs once, every
layer's output kept; then, for a batch of P occluder positions, each layer computes only its
window: a patch (P, h, w, c), with one offset per position, from a crop of the kept map of its
input with the input's changed patch laid over it, by the layer's own weights (VALID on the
crop). A layer's windows all have one size (a window that would cross a border is moved inside:
extra but exact work), so each layer is one batched op. Where a window grows to most of its
map (`FULL_AT`), or at a layer it cannot window (Flatten, Dense, global pooling, a gate
broadcast over the map, an average pool that pads: TensorFlow averages only the pixels it has),
the patches are pasted into P copies of the kept maps and the rest of the graph runs as usual:
the *fallback*.

Krypton's approximations: the projective-field threshold (a window's side stops growing at a
fraction of its map's side, centred where the change is; changes outside it are ignored) and
adaptive drill-down (`drill`).
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kvis.core.anatomy import class_scores
from kvis.core.graph import model_graph
from kvis.core.keras_internals import twin
from kvis.core.runner import compiled, run_batches
from kvis.core.targets import score_pass

# A window covering this fraction of its map's area is computed as the whole map instead.
FULL_AT = 0.5
# "auto" computes incrementally when that does at most this fraction of a full pass's work.
AUTO_AT = 0.65

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
_FULL = "full"


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
            step = _Step(node.path, _FULL, inputs=ins)
        done += cost if step.kind == _FULL else cost * np.prod(step.size) / np.prod(
            node.output.shape[1:3])
        steps.append(step)
        for tensor, state in zip(node.inputs, ins):
            if step.kind in ("sliding", "merge") or (step.kind == _FULL and state != _FULL):
                bases.setdefault(id(tensor), "" if tensor is graph.input else
                                 graph.producer(tensor))
        for tensor in keras.tree.flatten(node.output):
            states[id(tensor)] = _FULL if step.kind == _FULL else (step.index, step.size)
    for path in needed:
        bases.setdefault(id(graph.nodes[path].output), graph.nodes[path].path)
    return Plan(tuple(steps), np.stack(offsets, 1).astype(np.int32), done / max(total, 1.0),
                fallback, tuple(dict.fromkeys(bases.values())))


def responses(model, x, patches, plan_, *, layer, score, batch_size, progress=True):
    """The occluded images' layer sums and class scores, computed window by window.

    Args:
        model: a Keras classifier.
        x: float32 (1, H, W, C) the unoccluded model input.
        patches: `patches(rows) -> float32 (n, size, size, C)`: what the occluders of the
            positions in the slice `rows` put in the image, at `plan_.offsets[rows, 0]`.
        plan_: the `Plan` of those positions (`plan`).
        layer: the spatial layer whose output is summed over rows and columns.
        score: "logit" or "probability".
        batch_size: positions per pass.
        progress: show progress.

    Returns:
        `(features, scores)`: float32 (N, c) the layer's sums, (N, K) every class's score.
    """
    graph = model_graph(model)
    head, _ = class_scores(graph, score)
    kept = [p for p in plan_.bases if p]
    found = score_pass(model, None, layers=kept)(tf.constant(x)) if kept else {}
    bases = tuple([tf.constant(x) if p == "" else found[p] for p in plan_.bases])
    shape = patches(slice(0, 1)).shape[1:]
    key = ("incremental occlusion", plan_.key, plan_.bases, layer, score, shape)
    step = compiled(model, key, lambda jit: _build(model, plan_, layer, score, head, bases, shape,
                                                   jit))
    outputs = run_batches(lambda o, p: step(o, p, *bases),
                          lambda rows: (plan_.offsets[rows], patches(rows)),
                          count=len(plan_.offsets), batch_size=batch_size, desc="occlusion",
                          progress=progress)
    return outputs["features"], outputs["every_score"]


def drill(grid, corners, measure, fraction, target):
    """Krypton's adaptive drill-down: every other position in each direction first, then the
    given fraction of the others, those next to the largest score changes.

    Args:
        grid: the positions' `(rows, cols)`.
        corners: int (R * C, 2) their occluders' corners, row by row.
        measure: `measure(corners) -> (features, scores)`, row 0 the unoccluded image's.
        fraction: the fraction of the positions left out of the coarse grid that are computed;
            the others take the values of the coarse position above and left of them.
        target: the `kvis.core.targets.Target`: its class, else the top one, ranks changes.

    Returns:
        `(features, scores)` as `measure` gives them for all corners.
    """
    rows, cols = np.indices(grid)
    coarse = (rows % 2 == 0) & (cols % 2 == 0)
    features, scores = measure(corners[coarse.ravel()])
    cls = int(np.argmax(scores[0])) if target.classes is None else int(target.classes[0])
    change = np.abs(scores[0, cls] - scores[1:, cls]).reshape(-(-grid[0] // 2), -1)
    near = np.full(grid, 0)
    near[::2, ::2] = np.arange(coarse.sum()).reshape(change.shape)
    near = near[rows // 2 * 2, cols // 2 * 2].ravel() + 1
    # A position between coarse ones ranks by the largest change of its coarse neighbours.
    low = (rows // 2, cols // 2)
    high = tuple(np.minimum((i + 1) // 2, n - 1) for i, n in zip((rows, cols), change.shape))
    rank = np.maximum.reduce([change[a, b] for a in (low[0], high[0]) for b in (low[1], high[1])])
    others = np.flatnonzero(~coarse.ravel())
    chosen = others[np.argsort(-rank.ravel()[others], kind="stable")][
        :int(round(fraction * len(others)))]
    features, scores = features[np.r_[0, near]], scores[np.r_[0, near]]
    if len(chosen):
        fine = measure(corners[chosen])
        features[chosen + 1], scores[chosen + 1] = fine[0][1:], fine[1][1:]
    return features, scores


def floats_per_position(model, plan_):
    """Floats one occluder position keeps while the incremental pass runs: its patches, the
    crops they are computed from, and the full maps after the fallback."""
    nodes = model_graph(model).nodes
    total = 0
    for step in plan_.steps:
        node = nodes[step.path]
        if step.kind == _FULL:
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
    if _FULL in ins:
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


def _build(model, plan_, layer, score, head, bases, patch_shape, jit_compile):
    graph = model_graph(model)
    _, read = class_scores(graph, score)
    kept = {id(graph.input if p == "" else graph.nodes[p].output): i
            for i, p in enumerate(plan_.bases)}
    feature = graph.nodes[layer].output

    def traced(offsets, patches, *maps):
        base = {tensor: maps[i] for tensor, i in kept.items()}
        values = _run(graph, plan_, base, offsets, patches)
        state = next((s for s in plan_.steps for t in keras.tree.flatten(
            graph.nodes[s.path].output) if t is feature), None)
        return {"features": _layer_sum(values[id(feature)], base[id(feature)], state, offsets),
                "every_score": read(values[id(graph.nodes[head].output)])}

    specs = [tf.TensorSpec((None, *plan_.offsets.shape[1:]), tf.int32),
             tf.TensorSpec((None, *patch_shape)),
             *[tf.TensorSpec(b.shape, b.dtype) for b in bases]]
    return tf.function(traced, input_signature=specs, autograph=False, jit_compile=jit_compile)


def _run(graph, plan_, base, offsets, patches):
    """Every changed tensor for a batch of positions: its patch, or its full maps."""
    values = {id(graph.input): patches}
    for step in plan_.steps:
        node = graph.nodes[step.path]
        output = _compute(node, step, values, base, offsets)
        for tensor, value in zip(keras.tree.flatten(node.output), keras.tree.flatten(output)):
            values[id(tensor)] = value
    return values


def _compute(node, step, values, base, offsets):
    """One step's output: its patch (P, h, w, c), or its full maps after the fallback."""
    ins = dict(zip(map(id, node.inputs), step.inputs))
    if step.kind == "shift":
        return values[id(node.inputs[0])]
    if step.kind == "pointwise":
        args, kwargs = _substitute(node, lambda t: values[id(t)])
        return node.layer(*args, **kwargs)
    if step.kind == _FULL:
        args, kwargs = _substitute(node, lambda t: _whole(base.get(id(t)), values.get(id(t)),
                                                          ins[id(t)], offsets))
        return node.layer(*args, **kwargs)
    corner = offsets[:, step.index]
    args, kwargs = _substitute(node, lambda t: _crop(base[id(t)], values.get(id(t)),
                                                     ins[id(t)], offsets, corner, step))
    layer = _valid(node.layer) if step.kind == "sliding" else node.layer
    return layer(*args, **kwargs)


def _whole(base, value, state, offsets):
    """A tensor's full maps for every position: (P, H, W, C)."""
    if state == _FULL:
        return value
    if state is None:
        return tf.repeat(base, tf.shape(offsets)[0], axis=0)
    return _paste(base, value, offsets[:, state[0]])


def _substitute(node, value):
    return keras.tree.map_structure(
        lambda t: value(t) if isinstance(t, keras.KerasTensor) else t, (node.args, node.kwargs))


def _valid(layer):
    """The layer computing on a crop that already holds its padding."""
    return layer if layer.padding == "valid" else twin(layer, padding="valid")


def _crop(base, patch, state, offsets, corner, step):
    """The part of an input map a window needs, the input's patch laid over its kept map;
    for a conv or pool, of the map padded as the layer pads it (zeros; -inf for a max pool)."""
    size, start, shift = step.size, corner, [0, 0]
    if step.geometry:
        size = [(n - 1) * s + e for n, (e, s, _, _) in zip(step.size, step.geometry)]
        start = corner * [s for _, s, _, _ in step.geometry]
        shift = [before for _, _, before, _ in step.geometry]
        base = tf.pad(base, [[0, 0], *[g[2:] for g in step.geometry], [0, 0]],
                      constant_values=step.fill)
    rows, cols = start[:, :1] + tf.range(size[0]), start[:, 1:] + tf.range(size[1])
    background = _gather(base, rows, cols)
    if state is None:
        return background
    at = offsets[:, state[0]] + shift
    return _overlay(background, patch, rows - at[:, :1], cols - at[:, 1:])


def _gather(base, rows, cols):
    """Crops of `base` (1, H, W, C) at rows and cols, int (P, h) and (P, w): (P, h, w, C)."""
    shape = [tf.shape(rows)[0], rows.shape[1], cols.shape[1]]
    grid = tf.stack([tf.broadcast_to(rows[:, :, None], shape),
                     tf.broadcast_to(cols[:, None, :], shape)], -1)
    return tf.gather_nd(base[0], grid)


def _paste(base, patch, corner):
    """P copies of the kept map `base` (1, H, W, C), each with its patch at its corner."""
    rows = tf.range(base.shape[1])[None] - corner[:, :1]
    cols = tf.range(base.shape[2])[None] - corner[:, 1:]
    return _overlay(base, patch, rows, cols)


def _overlay(background, patch, rows, cols):
    """`background` where (rows, cols), int (P, h) and (P, w) indices into each position's
    patch, fall outside it, the patch's values where they fall inside."""
    height, width = patch.shape[1:3]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
        :, None, :]
    picked = tf.gather(patch, tf.clip_by_value(rows, 0, height - 1), axis=1, batch_dims=1)
    picked = tf.gather(picked, tf.clip_by_value(cols, 0, width - 1), axis=2, batch_dims=1)
    return tf.where(inside[..., None], picked, background)


def _layer_sum(value, base, state, offsets):
    """A layer's output summed over rows and columns, (P, c): for a window, the kept map's
    sum with the window's part replaced."""
    if state is None or state.kind == _FULL:
        return tf.reduce_sum(value, axis=(1, 2))
    corner = offsets[:, state.index]
    rows = corner[:, :1] + tf.range(state.size[0])
    cols = corner[:, 1:] + tf.range(state.size[1])
    under = tf.reduce_sum(_gather(base, rows, cols), axis=(1, 2))
    return tf.reduce_sum(base, axis=(1, 2)) + tf.reduce_sum(value, axis=(1, 2)) - under
