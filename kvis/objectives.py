"""Objectives: what an optimized image should maximize, one score per image of a batch.

An objective is a description, independent of any model; `bind(graph)` ties it to a model's
layers. Objectives combine with `+`, `-` and `*` by a number, and regularizers are objectives
too: `channel("block4_conv1", 37) - 0.05 * total_variation()`. Wherever a unit index is
taken, a sequence gives each image of the batch its own unit, which is how many filters are
optimized at once.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.anatomy import logits, spatial_node
from kvis.errors import KvisError


@dataclass(frozen=True)
class Bound:
    """An objective tied to one model.

    Attributes:
        layers: the layer paths whose outputs the score reads.
        score: `score(outputs, images) -> (B,)`, where `outputs` maps those paths to tensors
            and `images` is the (B, H, W, C) image in [0, 1] before any random transform.
    """

    layers: tuple
    score: object


class Objective:
    """Something to maximize, scored per image; combine with +, - and * by a number."""

    def __init__(self, name, bind):
        self.name = name
        self._bind = bind

    def bind(self, graph):
        """Tie the objective to a model's `kvis.graph.Graph`; returns a `Bound`.

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
            return Bound(inner.layers,
                         lambda outputs, images: factor * inner.score(outputs, images))

        return Objective(f"{factor:g} * {self.name}", bind)

    __rmul__ = __mul__

    def __neg__(self):
        return -1.0 * self

    def __repr__(self):
        return f"Objective({self.name})"


def channel(layer, index):
    """Mean activation of channel `index` of a spatial layer (a filter's response).

    Args:
        layer: layer path.
        index: a channel, or one channel per image of the batch.
    """

    def bind(graph):
        node = spatial_node(graph, layer, "a filter objective")
        units = _units(index, node.output.shape[-1], f"{node.path} filter")
        return Bound((node.path,), lambda outputs, images: _pick(
            tf.reduce_mean(outputs[node.path], axis=(1, 2)), units))

    return Objective(f"channel({layer}, {_label(index)})", bind)


def neuron(layer, index, position=None):
    """Activation of one unit: channel `index` at spatial `position` (default: the centre).

    Args:
        layer: layer path.
        index: a channel, or one channel per image of the batch.
        position: `(row, col)` in the layer's output grid.
    """

    def bind(graph):
        node = spatial_node(graph, layer, "a neuron objective")
        height, width = node.output.shape[1:3]
        row, col = position if position is not None else (height // 2, width // 2)
        if not (0 <= row < height and 0 <= col < width):
            raise KvisError(f"position {(row, col)} is outside {node.path}'s {height}x{width} grid")
        units = _units(index, node.output.shape[-1], f"{node.path} filter")
        return Bound((node.path,), lambda outputs, images: _pick(
            outputs[node.path][:, row, col, :], units))

    return Objective(f"neuron({layer}, {_label(index)})", bind)


def class_logit(index):
    """The pre-softmax score of class `index` (one class per image with a sequence).

    A final softmax (a Dense layer's activation, or a Softmax/Activation layer) is bypassed by
    computing the logits from the last layer's input with its own weights, so the caller's
    model is not changed.
    """

    def bind(graph):
        path, read_logits = logits(graph)
        classes = next(reversed(graph.nodes.values())).output.shape[-1]
        units = _units(index, classes, "class")
        return Bound((path,), lambda outputs, images: _pick(read_logits(outputs[path]), units))

    return Objective(f"class({_label(index)})", bind)


def layer_energy(layer):
    """Mean squared activation of a whole layer: what DeepDream amplifies."""

    def bind(graph):
        path = graph.node(layer).path
        return Bound((path,), lambda outputs, images: tf.reduce_mean(
            tf.square(outputs[path]), axis=tf.range(1, tf.rank(outputs[path]))))

    return Objective(f"energy({layer})", bind)


def feature_match(layer, target):
    """Minus the normalized distance to a target representation (network inversion).

    Scores -||phi(x) - phi0||^2 / ||phi0||^2 per image (Mahendran & Vedaldi 2015).

    Args:
        layer: layer path.
        target: phi0, the layer's output for the images to invert: (B, ...) with one target
            per optimized image, or (1, ...) for all of them.
    """
    target = tf.constant(np.asarray(target, np.float32))
    axes = tuple(range(1, len(target.shape)))
    target_energy = tf.maximum(tf.reduce_sum(tf.square(target), axis=axes), 1e-12)

    def bind(graph):
        node = graph.node(layer)
        if tuple(target.shape[1:]) != tuple(node.output.shape[1:]):
            raise KvisError(f"target of shape {tuple(target.shape)} does not match "
                            f"{node.path}'s output {tuple(node.output.shape)}")

        def score(outputs, images):
            error = tf.reduce_sum(tf.square(outputs[node.path] - target), axis=axes)
            return -error / target_energy

        return Bound((node.path,), score)

    return Objective(f"match({layer})", bind)


def select(objectives):
    """Image b of the batch maximizes `objectives[b]`: different objectives in one batch."""
    objectives = list(objectives)

    def bind(graph):
        bounds = [objective.bind(graph) for objective in objectives]
        layers = tuple(dict.fromkeys(path for bound in bounds for path in bound.layers))
        diagonal = tf.range(len(bounds))
        return Bound(layers, lambda outputs, images: _pick(
            tf.stack([bound.score(outputs, images) for bound in bounds], axis=1), diagonal))

    return Objective(f"select({', '.join(o.name for o in objectives)})", bind)


def lp_norm(p=2.0):
    """Mean |image - 0.5|^p: the Lp decay regularizer (p = 2: L2 decay; p = 6: Mahendran's)."""
    return Objective(f"L{p:g}", lambda graph: Bound((), lambda outputs, images: tf.reduce_mean(
        tf.abs(images - 0.5) ** p, axis=(1, 2, 3))))


def total_variation(beta=2.0):
    """Mean (dx^2 + dy^2)^(beta/2) over the image: penalizes high-frequency noise."""

    def score(outputs, images):
        dy = images[:, 1:, :-1, :] - images[:, :-1, :-1, :]
        dx = images[:, :-1, 1:, :] - images[:, :-1, :-1, :]
        return tf.reduce_mean((tf.square(dx) + tf.square(dy) + 1e-8) ** (beta / 2), axis=(1, 2, 3))

    return Objective(f"TV{beta:g}", lambda graph: Bound((), score))


def _combine(a, b, sign, name):
    def bind(graph):
        first, second = a.bind(graph), b.bind(graph)
        layers = tuple(dict.fromkeys(first.layers + second.layers))
        return Bound(layers, lambda outputs, images: first.score(outputs, images)
                     + sign * second.score(outputs, images))

    return Objective(name, bind)


def _units(index, size, kind):
    units = np.atleast_1d(np.asarray(index))
    if units.dtype.kind not in "iu" or units.ndim != 1:
        raise KvisError(f"a {kind} index must be an integer or a list of integers; got {index!r}")
    if bad := [int(u) for u in units if not 0 <= u < size]:
        raise KvisError(f"{kind} index {bad[0]} is out of range (0-{size - 1})")
    return tf.constant(units, tf.int32)


def _pick(values, units):
    """values (B, C) -> (B,): column units[b] of row b (one unit broadcasts to all rows)."""
    units = tf.broadcast_to(units, tf.shape(values)[:1])
    return tf.gather(values, units, axis=1, batch_dims=1)


def _label(index):
    units = np.atleast_1d(np.asarray(index))
    return str(units[0]) if units.size == 1 else f"{units.size} units"
