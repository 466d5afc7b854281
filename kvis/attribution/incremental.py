"""Incremental occlusion: the incremental and approximate inference of Krypton (Nakandala, Kumar
& Papakonstantinou, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", SIGMOD 2019).

An occluder changes only a window of each layer's maps. The unoccluded image runs once, every
layer's output kept; then, for a batch of P occluder positions, each layer computes only its
window: a patch (P, h, w, c), with one offset per position, from a crop of the kept map of its
input with the input's changed patch laid over it, by the layer's own weights (VALID on the
crop). A layer's windows all have one size (a window that would cross a border is moved inside:
extra but exact work), so each layer is one batched op. Where the plan
(`kvis.attribution.incremental_plan`) falls back, the patches are pasted into P copies of the
kept maps and the rest of the graph runs as usual. An average pool that pads cannot be
windowed: TensorFlow averages only the pixels it has.

Krypton's approximations: the projective-field threshold (a window's side stops growing at a
fraction of its map's side, centred where the change is; changes outside it are ignored) and
adaptive drill-down (`drill`).
"""

import keras
import numpy as np
import tensorflow as tf

from kvis.attribution.incremental_plan import FULL
from kvis.core.anatomy import class_scores
from kvis.core.graph import model_graph
from kvis.core.keras_internals import twin
from kvis.core.runner import compiled, run_batches
from kvis.core.targets import score_pass

# "auto" computes incrementally when that does at most this fraction of a full pass's work.
AUTO_AT = 0.65


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
    if step.kind == FULL:
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
    if state == FULL:
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
    if state is None or state.kind == FULL:
        return tf.reduce_sum(value, axis=(1, 2))
    corner = offsets[:, state.index]
    rows = corner[:, :1] + tf.range(state.size[0])
    cols = corner[:, 1:] + tf.range(state.size[1])
    under = tf.reduce_sum(_gather(base, rows, cols), axis=(1, 2))
    return tf.reduce_sum(base, axis=(1, 2)) + tf.reduce_sum(value, axis=(1, 2)) - under
