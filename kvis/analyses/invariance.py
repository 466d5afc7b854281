"""Feature invariance (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014, Section 4, Fig. 5): how much a layer's output and the class score change as an
image is shifted, scaled or rotated.

Each image is transformed on a canvas of its own size (what leaves the canvas is lost, what
enters is the mean pixel), and the Euclidean distance between the flattened layer output of
the original and of the transformed image is measured at an early and a late layer (Z&F: layers
1 and 7), next to the score of the image's true class: its probability, as in the paper, or
its logit. Z&F found the early layer changing sharply with any transform and the late layer
changing little (quasi-linearly) under translation and scaling, but not under rotation unless
the object is rotationally symmetric.
"""

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from kvis.core.anatomy import (
    penultimate_layer,
    stage_layers,
)
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images
from kvis.core.models import class_label, mean_pixel, preprocessing_for
from kvis.core.runner import rows_within, run_batches
from kvis.core.targets import make_target, score_pass
from kvis.core.vocabulary import TRANSFORMS
from kvis.plot.figures import NotebookFigure, fit_texts, per_row

UNITS = {"translate": "vertical shift (pixels)", "scale": "scale factor",
         "rotate": "rotation (degrees)"}


@dataclass(frozen=True)
class InvarianceCurves:
    """Distances and class scores of images under one transform, at several strengths.

    Attributes:
        transform: "translate", "scale" or "rotate".
        values: float32 (T,) the transform parameters: vertical shift in pixels (positive:
            down), scale factor, or degrees (counter-clockwise).
        layers: tuple of L layer paths, by default 2: (early, late).
        distances: float32 (L, N, T) >= 0, Euclidean distance between the flattened layer
            output of the original and of the transformed image; exactly 0 at the identity.
        scores: float32 (N, T) the score of each image's true class on the transformed
            image: a probability in [0, 1] or a logit, as `score` says.
        score: "probability" (softmax) or "logit" (pre-softmax).
        classes: int64 (N,) the true classes.
        class_labels: their N names ("#c" where kvis does not know the names).
        names: the N image names.
        pixels: uint8 (N, H, W, C) the untransformed images, for display.
    """

    transform: str
    values: np.ndarray
    layers: tuple
    distances: np.ndarray
    scores: np.ndarray
    score: str
    classes: np.ndarray
    class_labels: list
    names: list
    pixels: np.ndarray


def default_values(transform, size):
    """The transform strengths of the paper's Fig. 5.

    Args:
        transform: "translate", "scale" or "rotate".
        size: the images' (height, width), or their height.

    Returns:
        float32 (T,): translate, vertical shifts from -0.27 H to +0.27 H in 13 steps rounded to
        whole pixels (-60, -50, ..., 60 for 224 px; duplicates dropped for small images, 0
        always included); scale, 1.0 to 1.8 in 9 steps; rotate, 0 to 360 degrees by 30.
    """
    _check_transform(transform)
    if transform == "translate":
        height = size if np.ndim(size) == 0 else size[0]
        reach = 0.27 * float(height)
        return np.unique(np.round(np.linspace(-reach, reach, 13))).astype(np.float32) + 0.0
    if transform == "scale":
        return np.linspace(1.0, 1.8, 9).astype(np.float32)
    return np.arange(0, 361, 30).astype(np.float32)


def transform_image(pixels, transform, value, *, fill):
    """Shift, scale or rotate an image on a canvas of its own size (cv2.warpAffine, bilinear).

    Args:
        pixels: uint8 (H, W, C), C = 1 or 3.
        transform: "translate" (move down by `value` pixels; negative: up), "scale" (zoom by
            `value` about the centre: 2.0 shows the central half) or "rotate" (turn by `value`
            degrees counter-clockwise about the centre).
        value: the transform's strength; the identity (0 px, 1.0, 0 or 360 degrees) returns
            the image unchanged.
        fill: the colour of uncovered canvas, a number or (C,) in [0, 255] (rounded), usually
            `kvis.core.models.mean_pixel(model)`.

    Returns:
        uint8 (H, W, C).

    Raises:
        KvisError: an unknown transform, a scale factor <= 0, or pixels that are not (H, W, C).
    """
    _check_transform(transform)
    pixels = np.asarray(pixels)
    if pixels.ndim != 3:
        raise KvisError(f"an image to transform must be (H, W, C); got shape {pixels.shape}")
    value = float(value)
    if transform == "scale" and value <= 0:
        raise KvisError(f"a scale factor must be positive; got {value:g}")
    if _is_identity(transform, value):
        return pixels.copy()
    height, width, channels = pixels.shape
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2  # pixel centres: exact rot90 at 90
    if transform == "translate":
        matrix = np.float64([[1, 0, 0], [0, 1, value]])
    elif transform == "scale":
        matrix = np.float64([[value, 0, (1 - value) * centre_x],
                             [0, value, (1 - value) * centre_y]])
    else:
        matrix = cv2.getRotationMatrix2D((centre_x, centre_y), value, 1.0)
    border = np.broadcast_to(np.asarray(fill, np.float64), (channels,))
    moved = cv2.warpAffine(pixels, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(float(v) for v in border))
    return moved.reshape(height, width, channels)  # cv2 drops a single channel axis


def invariance(model, images, *, transform="translate", values=None, layers=None, classes=None,
               score="probability", batch_size=32, memory_mb=1024, progress=True):
    """Distances at an early and a late layer, and the true class's score, as images are
    transformed more and more strongly (Z&F Fig. 5).

    The transforms work on the images' pixels (`kvis.as_images(...).pixels`; for an array,
    the model input mapped back through the model's preprocessing), and the transformed
    pixels go through the model's preprocessing (`kvis.preprocessing_for(model)`). The
    originals go through one compiled pass; the N x T transformed images through another,
    a batch at a time, which measures the distances on the device. The identity transform
    reuses the original's outputs (distance exactly 0).

    Args:
        model: a Keras classifier with output (N, classes).
        images: `kvis.ModelImage`s of one size (from `kvis.load_image`), or a preprocessed
            float32 array (N, H, W, C).
        transform: "translate", "scale" or "rotate" (see `transform_image`).
        values: the transform's strengths (default: `default_values`).
        layers: layer paths (default: the first stage, `stage_layers(model)[0]`, e.g. VGG16's
            block1_conv2, and `penultimate_layer(model)`, e.g. fc2).
        classes: the true class of each image (index or name), one for all, or None for each
            image's top prediction on the untransformed image.
        score: "probability" (default: the paper's Fig. 5 plots it) or "logit".
        batch_size: images per compiled pass.
        memory_mb: the budget of one pass; the transformed images are made a batch at a
            time.
        progress: show progress.

    Returns:
        An `InvarianceCurves`.

    Raises:
        KvisError: an unknown transform, score, layer or class, no images, images of
            different sizes, a model that is not a classifier, or one whose preprocessing
            kvis cannot tell.

    Example:
        >>> images = [kvis.load_image(path, model) for path in ["dog.jpg", "boat.jpg"]]
        >>> curves = kvis.invariance(model, images, transform="rotate", score="logit")
        >>> kvis.plot_invariance(curves)
    """
    _check_transform(transform)
    batch = as_images(model, images)
    preprocess = preprocessing_for(model)
    pixels = batch.pixels
    values = (default_values(transform, pixels.shape[1:3]) if values is None
              else _checked_values(transform, values))
    paths = tuple(_layers(model, layers))
    target = make_target(model, len(pixels), classes=classes, score=score,
                         purpose="invariance")
    batch_size = rows_within(model, memory_mb, batch_size=batch_size)
    count, steps = len(pixels), len(values)
    first = run_batches(score_pass(model, target, layers=paths),
                        (preprocess(pixels), *target.rows(np.arange(count))),
                        batch_size=batch_size, desc="invariance, originals", progress=progress)
    target = dataclasses.replace(target, classes=first["classes"])
    originals = [first[path].reshape(count, -1) for path in paths]
    distances = np.zeros((len(paths), count, steps), np.float32)
    scores = np.repeat(first["scores"][:, None], steps, axis=1)  # the identity

    fill = mean_pixel(model)
    jobs = np.array([(n, t) for n in range(count) for t in range(steps)
                     if not _is_identity(transform, values[t])], np.int64).reshape(-1, 2)

    def moved(rows):
        picked = jobs[rows]
        return preprocess(np.stack([transform_image(pixels[n], transform, values[t], fill=fill)
                                    for n, t in picked])), *target.rows(picked[:, 0])

    if len(jobs):
        after = run_batches(score_pass(model, target, layers=paths), moved, count=len(jobs),
                            batch_size=batch_size, desc="invariance", progress=progress)
        for row, (path, original) in enumerate(zip(paths, originals)):
            change = after[path].reshape(len(jobs), -1) - original[jobs[:, 0]]
            distances[row, jobs[:, 0], jobs[:, 1]] = np.linalg.norm(
                change.astype(np.float64), axis=1)
        scores[jobs[:, 0], jobs[:, 1]] = after["scores"]
    classes = target.classes
    return InvarianceCurves(transform, values, paths, distances, scores.astype(np.float32),
                            score, classes, [class_label(model, int(c)) for c in classes],
                            list(batch.names), pixels)


def plot_invariance(result, *, fig=None, title=None):
    """The paper's Fig. 5: distance at each layer and the true class's score against the
    transform's strength, one line per image, labelled with its name and class.

    Args:
        result: an `InvarianceCurves`.
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: the figure's title.

    Returns:
        The Figure (or SubFigure) drawn in, with L + 1 panels (by default 3: early layer,
        late layer, score), as many side by side as fit in `kvis.plot.figures.WIDEST`.
    """
    panels = len(result.layers) + 1
    cols = per_row(panels, 3.6, extra=1.4)
    rows = -(-panels // cols)
    if fig is None:
        fig = NotebookFigure(figsize=(3.6 * cols + 1.4, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.remove()
    axes = axes[:panels]
    labels = [f"{name}: {label}" for name, label in zip(result.names, result.class_labels)]
    curves = [*zip(result.layers, result.distances), ("", result.scores)]
    for ax, (path, rows) in zip(axes, curves):
        for label, row in zip(labels, rows):
            ax.plot(result.values, row, marker="o", markersize=3, label=label)
        ax.set_xlabel(UNITS[result.transform], fontsize=8)
        ax.tick_params(labelsize=8)
        if path:
            ax.set_title(f"{path}: change of the output", fontsize=9)
            ax.set_ylabel("Euclidean distance to the original", fontsize=8)
    axes[-1].set_title(f"{result.score} of the true class", fontsize=9)
    if result.score == "probability":
        axes[-1].set_ylim(-0.02, 1.02)
    fig.legend(*axes[-1].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    fig.suptitle(title or f"invariance to {result.transform} (Zeiler & Fergus 2014, Fig. 5)")
    return fit_texts(fig)


def _layers(model, layers):
    if layers is None:
        stages = stage_layers(model)
        if not stages:
            raise KvisError(f"model {model.name!r} has no spatial layer; name the layers")
        layers = (stages[0], penultimate_layer(model))
    elif isinstance(layers, str):
        layers = (layers,)
    if not layers:
        raise KvisError("no layers given")
    graph = model_graph(model)
    return [graph.node(path).path for path in layers]


def _checked_values(transform, values):
    values = np.atleast_1d(np.asarray(values, np.float32)).ravel()
    if not len(values) or not np.all(np.isfinite(values)):
        raise KvisError(f"transform values must be finite numbers; got {values.tolist()}")
    if transform == "scale" and np.any(values <= 0):
        raise KvisError(f"scale factors must be positive; got {values.tolist()}")
    return values


def _check_transform(transform):
    if transform not in TRANSFORMS:
        raise KvisError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")


def _is_identity(transform, value):
    if transform == "translate":
        return value == 0
    if transform == "scale":
        return value == 1
    return value % 360 == 0
