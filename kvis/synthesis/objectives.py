"""Objectives: what an optimized image should maximize, one score per image of a batch.

An objective is a description, independent of any model; `bind(graph)` ties it to a model's
layers. Objectives combine with `+`, `-` and `*` by a number, and regularizers are objectives
too: `channel("block4_conv1", 37) - 0.05 * total_variation()`. Wherever channels or classes
are taken, a sequence of indices gives each image of the batch its own unit, which is how many
filters are optimized at once.

A bound objective keeps its structure (`key`: which layers, which kind of score) apart from
the data that changes between calls (`values`: the unit indices, the targets), which a
compiled pass takes as tensor inputs (`read`): one pass traced for
`channel("block4_conv1", [0, 1])` serves `channel("block4_conv1", [7, 9])` too.
"""

import numbers
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.core.anatomy import logits, spatial_node
from kvis.core.errors import KvisError


@dataclass(frozen=True)
class Bound:
    """An objective tied to one model.

    Attributes:
        layers: the layer paths whose outputs the score reads.
        score: `score(outputs, images) -> (B,)`, where `outputs` maps those paths to tensors
            and `images` is the (B, H, W, C) image in [0, 1] before any random transform.
        values: NumPy arrays that change from call to call (unit indices, int32 (1,) or (B,);
            inversion targets, float32).
        read: `read(outputs, images, *values) -> (B,)`, the score with its values as inputs,
            for a compiled pass that takes them as tensors; None for a score of one's own.
        key: the structure, hashable: two bound objectives of one model with equal keys and
            values of the same shapes trace the same graph through `read`. None where it is
            unknown (a score of one's own): a pass is then traced for each call.
    """

    layers: tuple
    score: object
    values: tuple = ()
    read: object = None
    key: object = None


def _bound(layers, read, values=(), key=None):
    """A `Bound` whose score is `read` of `values`."""
    return Bound(tuple(layers), lambda outputs, images: read(outputs, images, *values),
                 tuple(values), read, key)


class Objective:
    """Something to maximize, scored per image; combine with +, - and * by a number."""

    def __init__(self, name, bind):
        self.name = name
        self._bind = bind

    def bind(self, graph):
        """Tie the objective to a model's `kvis.core.graph.Graph`; returns a `Bound`.

        Raises:
            KvisError: a layer is missing, or a unit index is out of range.
        """
        return self._bind(graph)

    def __add__(self, other):
        return _combine(self, other, 1.0, f"{self.name} + {other.name}")

    def __sub__(self, other):
        return _combine(self, other, -1.0, f"{self.name} - {other.name}")

    def __mul__(self, factor):
        def bind(graph):
            inner = self.bind(graph)
            key = ("*", float(factor)) if isinstance(factor, numbers.Real) else None
            return _joined([inner], lambda scores: factor * scores[0], key)

        return Objective(f"{factor:g} * {self.name}", bind)

    __rmul__ = __mul__

    def __neg__(self):
        return -1.0 * self

    def __repr__(self):
        return f"Objective({self.name})"


def channel(layer, channels):
    """Mean activation of a channel of a spatial layer (a filter's response).

    Args:
        layer: layer path.
        channels: a channel index, or one per image of the batch.
    """

    def bind(graph):
        node = spatial_node(graph, layer, "a filter objective")
        units = _units(channels, node.output.shape[-1], f"{node.path} filter")
        return _bound((node.path,), lambda outputs, images, units: _pick(
            tf.reduce_mean(outputs[node.path], axis=(1, 2)), units), (units,),
            ("channel", node.path))

    return Objective(f"channel({layer}, {_label(channels)})", bind)


def neuron(layer, channels, position=None):
    """Activation of one unit: a channel at spatial `position` (default: the centre).

    Args:
        layer: layer path.
        channels: a channel index, or one per image of the batch.
        position: `(row, col)` in the layer's output grid.
    """

    def bind(graph):
        node = spatial_node(graph, layer, "a neuron objective")
        height, width = node.output.shape[1:3]
        row, col = position if position is not None else (height // 2, width // 2)
        if not (0 <= row < height and 0 <= col < width):
            raise KvisError(f"position {(row, col)} is outside {node.path}'s {height}x{width} grid")
        units = _units(channels, node.output.shape[-1], f"{node.path} filter")
        return _bound((node.path,), lambda outputs, images, units: _pick(
            outputs[node.path][:, row, col, :], units), (units,),
            ("neuron", node.path, int(row), int(col)))

    return Objective(f"neuron({layer}, {_label(channels)})", bind)


def class_logit(classes):
    """The pre-softmax score of a class (one class index per image with a sequence).

    A final softmax (a Dense layer's activation, or a Softmax/Activation layer) is bypassed by
    computing the logits from the last layer's input with its own weights, so the caller's
    model is not changed.
    """

    def bind(graph):
        path, read_logits = logits(graph)
        count = next(reversed(graph.nodes.values())).output.shape[-1]
        units = _units(classes, count, "class")
        return _bound((path,), lambda outputs, images, units: _pick(
            read_logits(outputs[path]), units), (units,), ("class", path))

    return Objective(f"class({_label(classes)})", bind)


def layer_energy(layer):
    """Mean squared activation of a whole layer: what DeepDream amplifies."""

    def bind(graph):
        path = graph.node(layer).path
        return _bound((path,), lambda outputs, images: tf.reduce_mean(
            tf.square(outputs[path]), axis=tf.range(1, tf.rank(outputs[path]))),
            key=("energy", path))

    return Objective(f"energy({layer})", bind)


def feature_match(layer, target):
    """Minus the normalized distance to a target representation (network inversion).

    Scores -||phi(x) - phi0||^2 / ||phi0||^2 per image (Mahendran & Vedaldi 2015).

    Args:
        layer: layer path.
        target: phi0, the layer's output for the images to invert: (B, ...) with one target
            per optimized image, or (1, ...) for all of them.
    """
    target = np.asarray(target, np.float32)
    axes = tuple(range(1, target.ndim))

    def bind(graph):
        node = graph.node(layer)
        if tuple(target.shape[1:]) != tuple(node.output.shape[1:]):
            raise KvisError(f"target of shape {tuple(target.shape)} does not match "
                            f"{node.path}'s output {tuple(node.output.shape)}")

        def read(outputs, images, phi0):
            energy = tf.maximum(tf.reduce_sum(tf.square(phi0), axis=axes), 1e-12)
            return -tf.reduce_sum(tf.square(outputs[node.path] - phi0), axis=axes) / energy

        return _bound((node.path,), read, (target,), ("match", node.path))

    return Objective(f"match({layer})", bind)


def select(objectives):
    """Image b of the batch maximizes `objectives[b]`: different objectives in one batch."""
    objectives = list(objectives)

    def bind(graph):
        return _joined([objective.bind(graph) for objective in objectives], lambda scores: _pick(
            tf.stack(scores, axis=1), tf.range(len(scores))), ("select",))

    return Objective(f"select({', '.join(o.name for o in objectives)})", bind)


def lp_norm(p=2.0):
    """Mean |image - 0.5|^p: the Lp decay regularizer (p = 2: L2 decay; p = 6: Mahendran's)."""
    return Objective(f"L{p:g}", lambda graph: _bound((), lambda outputs, images: tf.reduce_mean(
        tf.abs(images - 0.5) ** p, axis=(1, 2, 3)), key=("lp", float(p))))


def total_variation(beta=2.0):
    """Mean (dx^2 + dy^2)^(beta/2) over the image: penalizes high-frequency noise."""

    def read(outputs, images):
        dy = images[:, 1:, :-1, :] - images[:, :-1, :-1, :]
        dx = images[:, :-1, 1:, :] - images[:, :-1, :-1, :]
        return tf.reduce_mean((tf.square(dx) + tf.square(dy) + 1e-8) ** (beta / 2), axis=(1, 2, 3))

    return Objective(f"TV{beta:g}", lambda graph: _bound((), read, key=("tv", float(beta))))


def _combine(a, b, sign, name):
    def bind(graph):
        return _joined([a.bind(graph), b.bind(graph)],
                       lambda scores: scores[0] + sign * scores[1], ("+" if sign > 0 else "-",))

    return Objective(name, bind)


def _joined(parts, join, kind):
    """The `Bound` that joins the scores of bound `parts` with `join(scores) -> (B,)`.

    Its `read` gives each part its own values and holds the parts' reads, not the parts: a
    compiled pass that keeps it keeps no call's values. Its key is `kind` with the parts'
    keys, or None where a part's is unknown."""
    reads = [part.read or (lambda outputs, images, part=part: part.score(outputs, images))
             for part in parts]
    ends = np.cumsum([0] + [len(part.values) for part in parts]).tolist()

    def read(outputs, images, *values):
        return join([part(outputs, images, *values[start:end])
                     for part, start, end in zip(reads, ends[:-1], ends[1:])])

    keys = tuple(part.key for part in parts)
    known = kind is not None and None not in keys
    return _bound(dict.fromkeys(path for part in parts for path in part.layers), read,
                 sum((part.values for part in parts), ()), (*kind, *keys) if known else None)


def _units(indices, size, kind):
    units = np.atleast_1d(np.asarray(indices))
    if units.dtype.kind not in "iu" or units.ndim != 1:
        raise KvisError(f"a {kind} index must be an integer or a list of integers; "
                        f"got {indices!r}")
    if bad := [int(u) for u in units if not 0 <= u < size]:
        raise KvisError(f"{kind} index {bad[0]} is out of range (0-{size - 1})")
    return units.astype(np.int32)


def _pick(values, units):
    """values (B, C) -> (B,): column units[b] of row b (one unit broadcasts to all rows)."""
    units = tf.broadcast_to(units, tf.shape(values)[:1])
    return tf.gather(values, units, axis=1, batch_dims=1)


def _label(indices):
    units = np.atleast_1d(np.asarray(indices))
    return str(units[0]) if units.size == 1 else f"{units.size} units"
