"""Activation maximization: the images that most excite a filter, a neuron, a class or a layer.

Images are synthesized from noise by gradient ascent on the shared engine (`kvis.synthesis.render`).
Many units are optimized at once, one image per unit in the batch dimension, and an image
depends only on its seed and its unit: batched results equal one-at-a-time results.
"""

from dataclasses import dataclass

import numpy as np

from kvis.core.anatomy import spatial_node
from kvis.core.graph import model_graph
from kvis.core.models import class_index, class_label
from kvis.plot.figures import image_grid
from kvis.synthesis import objectives
from kvis.synthesis.render import render


@dataclass(frozen=True)
class Synthesis:
    """Synthesized images, one per unit.

    Attributes:
        images: float32 (K, H, W, C) in [0, 1], RGB or grayscale.
        units: a label per image: "#37" for a filter, the class name (`class_label`) for a
            class, e.g. "tabby".
        scores: float32 (K,) each unit's objective on its final image.
        history: float32 (chunks, K) the objective during the optimization.
        title: what was maximized, for figures.
    """

    images: np.ndarray
    units: list
    scores: np.ndarray
    history: np.ndarray
    title: str


def maximize(model, objective, *, count=1, seed=0, labels=None, settings=None, size=None,
             progress=True):
    """Synthesize `count` images that maximize an objective (any, composed ones included).

    Args:
        model: a Keras model.
        objective: a `kvis.synthesis.objectives.Objective`; channels or classes given as a
            sequence assign one unit to each of the `count` images.
        count: how many images to synthesize.
        seed: image i starts from the noise of seed `(seed, i)`.
        labels: a label per image.
        settings, size, progress: as for `kvis.synthesis.render.render`.

    Returns:
        A `Synthesis`.

    Example:
        >>> from kvis.synthesis import objectives as obj
        >>> goal = obj.channel("block4_conv1", 37) - 0.05 * obj.total_variation()
        >>> kvis.plot_synthesis(kvis.maximize(model, goal))
    """
    labels = labels or [f"#{i}" for i in range(count)]
    result = render(model, objective, seeds=[(seed, i) for i in range(count)], labels=labels,
                    settings=settings, size=size, progress=progress)
    return Synthesis(result.images, labels, result.scores, result.history, objective.name)


def maximize_filters(model, layer, channels=None, *, seed=0, batch_size=64, settings=None,
                     size=None, progress=True):
    """For each filter (channel) of a spatial layer, the image that most excites it.

    The optimization is compiled once per model, layer and batch shape: a second call for
    other channels of the same layer traces nothing.

    Args:
        model: a Keras model.
        layer: layer path, e.g. "block4_conv1" or "resnet50/conv4_block6_out".
        channels: channel indices (default: all of the layer's channels).
        seed: the image of channel c starts from the noise of seed `(seed, c)`, whatever the
            other channels in the batch.
        batch_size: channels optimized together in one batch.
        settings, size, progress: as for `kvis.synthesis.render.render`.

    Returns:
        A `Synthesis` with units labelled "#c".

    Raises:
        KvisError: the layer is not spatial, or a channel index is out of range.

    Example:
        >>> grid = kvis.maximize_filters(model, "block4_conv1", range(16))
        >>> kvis.plot_synthesis(grid)
    """
    node = spatial_node(model_graph(model), layer, "a filter objective")
    channels = (list(range(node.output.shape[-1])) if channels is None
                else [int(c) for c in channels])
    return _maximize_units(model, lambda group: objectives.channel(node.path, group), channels,
                           [f"#{c}" for c in channels], f"filters of {node.path}", seed,
                           batch_size, dict(settings=settings, size=size, progress=progress))


def maximize_classes(model, classes, *, seed=0, batch_size=64, settings=None, size=None,
                     progress=True):
    """For each class, the image that most raises its pre-softmax score.

    Args:
        model: a Keras classifier; a final softmax is bypassed, the model is not changed.
        classes: class indices, or class names when kvis knows the model's classes.
        seed, batch_size, settings, size, progress: as for `maximize_filters`.

    Returns:
        A `Synthesis` with units labelled by class name ("#c" where names are unknown).

    Example:
        >>> kvis.plot_synthesis(kvis.maximize_classes(model, ["tabby", 285]))
    """
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    indices = [class_index(model, c) for c in classes]
    labels = [class_label(model, c) for c in indices]
    title = "classes " + ", ".join(labels[:4]) + (" ..." if len(labels) > 4 else "")
    return _maximize_units(model, objectives.class_logit, indices, labels, title, seed,
                           batch_size, dict(settings=settings, size=size, progress=progress))


def plot_synthesis(result, *, cols=None, fig=None, title=None):
    """The synthesized images as a grid, each labelled with its unit and the objective's
    value on its final image; the title says once what that value is ("mean activation" for
    a filter, "logit" for a class, "objective" for any other objective).

    Args:
        result: a `Synthesis`.
        cols: tiles per row (default: about square).
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: figure title (default: what was maximized).

    Returns:
        A Figure.
    """
    labels = [f"{unit}  {score:.3g}" for unit, score in zip(result.units, result.scores)]
    heading = (f"{title or result.title}\n(under each image: the unit, and the "
               f"{_measure(result.title)} it reaches)")
    return image_grid(list(result.images), titles=labels, cols=cols, cmap="gray", vmin=0, vmax=1,
                      title=heading, tile_inches=1.4, fig=fig)


def _measure(title):
    """What a synthesis' scores measure, from what was maximized (its title, as
    `maximize_filters`, `maximize_classes` and `maximize` set it)."""
    if title.startswith("classes "):
        return "logit"
    return "mean activation" if title.startswith("filters of ") else "objective"


def _maximize_units(model, objective_for, units, labels, title, seed, batch_size, options):
    """Render `units` in batches; unit u's image starts from the noise of seed (seed, u)."""
    parts = [
        render(model, objective_for(units[i:i + batch_size]),
               seeds=[(seed, u) for u in units[i:i + batch_size]],
               labels=labels[i:i + batch_size], **options)
        for i in range(0, len(units), batch_size)
    ]
    return Synthesis(np.concatenate([p.images for p in parts]), labels,
                     np.concatenate([p.scores for p in parts]),
                     np.concatenate([p.history for p in parts], axis=1), title)
