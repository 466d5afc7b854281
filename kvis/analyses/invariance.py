"""Feature invariance (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014, Section 4, Fig. 5): how much a layer's output and the class probability change as
an image is shifted, scaled or rotated.

Each image is transformed on a canvas of its own size (what leaves the canvas is lost, what
enters is the mean pixel), and the Euclidean distance between the flattened layer output of
the original and of the transformed image is measured at an early and a late layer (Z&F: layers
1 and 7), next to the probability of the image's true class. Z&F found the early layer
changing sharply with any transform and the late layer changing little (quasi-linearly) under
translation and scaling, but not under rotation unless the object is rotationally symmetric.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from tqdm.auto import tqdm

from kvis.anatomy import penultimate_layer, stage_layers
from kvis.errors import KvisError
from kvis.graph import model_graph, probe
from kvis.images import ModelImage, check_input
from kvis.models import class_indices, mean_pixel
from kvis.plot import NotebookFigure

TRANSFORMS = ("translate", "scale", "rotate")
UNITS = {"translate": "vertical shift (pixels)", "scale": "scale factor",
         "rotate": "rotation (degrees)"}


@dataclass(frozen=True)
class InvarianceCurves:
    """Distances and probabilities of images under one transform, at several strengths.

    Attributes:
        transform: "translate", "scale" or "rotate".
        values: float32 (T,) the transform parameters: vertical shift in pixels (positive:
            down), scale factor, or degrees (counter-clockwise).
        layers: tuple of L layer paths, by default 2: (early, late).
        distances: float32 (L, N, T) >= 0, Euclidean distance between the flattened layer
            output of the original and of the transformed image; exactly 0 at the identity.
        probabilities: float32 (N, T) in [0, 1], softmax probability of each image's true class
            on the transformed image.
        classes: int64 (N,) the true classes.
        names: the N image names.
    """

    transform: str
    values: np.ndarray
    layers: tuple
    distances: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray
    names: list


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
            `kvis.mean_pixel(model)`.

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
               batch_size=32, preprocessing="auto"):
    """Distances at an early and a late layer, and the true class's probability, as images
    are transformed more and more strongly (Z&F Fig. 5).

    All N x T transformed images go through one probe of the layers and the model's output,
    a batch at a time; the identity transform reuses the original's outputs.

    Args:
        model: a Keras classifier with output (N, classes).
        images: `kvis.ModelImage`s of one size (from `kvis.load_image`).
        transform: "translate", "scale" or "rotate" (see `transform_image`).
        values: the transform's strengths (default: `default_values`).
        layers: layer paths (default: the first stage, `stage_layers(model)[0]`, e.g. VGG16's
            block1_conv2, and `penultimate_layer(model)`, e.g. fc2).
        classes: the true class of each image (index or name), one for all, or None for each
            image's top prediction on the untransformed image.
        batch_size: images per forward pass.
        preprocessing: the preprocessing the images were loaded with (see
            `kvis.preprocessing_for`); the transformed pixels are prepared the same way.

    Returns:
        An `InvarianceCurves`.

    Raises:
        KvisError: an unknown transform, layer or class, no images, images of different
            sizes or not prepared with `preprocessing`, or a model that is not a classifier.

    Example:
        >>> images = [kvis.load_image(path, model) for path in ["dog.jpg", "boat.jpg"]]
        >>> curves = kvis.invariance(model, images, transform="rotate")
        >>> kvis.plot_invariance(curves, class_names=kvis.class_names(model))
    """
    _check_transform(transform)
    images = list(images)
    pixels, preprocess = prepared_pixels(model, images, preprocessing)
    if batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    if len(model.output_shape) != 2:
        raise KvisError(f"invariance needs a classifier with output (N, classes); model "
                        f"{model.name!r} has output shape {model.output_shape}")
    values = (default_values(transform, pixels.shape[1:3]) if values is None
              else _checked_values(transform, values))
    paths = _layers(model, layers)
    graph = model_graph(model)
    output = next(reversed(graph.nodes))
    wanted = class_indices(model, classes, len(pixels))
    count, steps = len(pixels), len(values)

    fill = mean_pixel(model)
    jobs = [(n, t) for n in range(count) for t in range(steps)
            if not _is_identity(transform, values[t])]
    image_of = np.r_[np.arange(count), [n for n, _ in jobs]].astype(np.int64)
    step_of = np.r_[np.full(count, -1), [t for _, t in jobs]].astype(np.int64)
    x = preprocess(np.stack(list(pixels) + [
        transform_image(pixels[n], transform, values[t], fill=fill) for n, t in jobs]))

    distances = np.zeros((len(paths), count, steps), np.float32)
    final = None
    originals = [None] * len(paths)
    for start, outputs in forward(probe(model, [*paths, output]), x, batch_size, "invariance"):
        rows = np.arange(start, start + len(outputs[output]))
        if final is None:
            final = np.empty((len(x), outputs[output].shape[-1]), np.float32)
        final[rows] = outputs[output]
        first, moved = rows < count, rows >= count
        for i, path in enumerate(paths):
            flat = outputs[path].reshape(len(rows), -1)
            if originals[i] is None:
                originals[i] = np.empty((count, flat.shape[1]), np.float32)
            originals[i][rows[first]] = flat[first]  # originals come first, before their moves
            change = flat[moved].astype(np.float64) - originals[i][image_of[rows[moved]]]
            distances[i, image_of[rows[moved]], step_of[rows[moved]]] = np.linalg.norm(
                change, axis=1)

    probabilities_all = final if _are_probabilities(final) else _softmax(final)
    classes = np.where(wanted < 0, probabilities_all[:count].argmax(axis=-1), wanted)
    true = probabilities_all[np.arange(len(x)), classes[image_of]]
    probabilities = np.repeat(true[:count, None], steps, axis=1)  # identity columns
    probabilities[image_of[count:], step_of[count:]] = true[count:]
    return InvarianceCurves(transform, values, tuple(paths), distances,
                            probabilities.astype(np.float32), classes.astype(np.int64),
                            [image.name for image in images])


def plot_invariance(result, *, class_names=None, title=None):
    """The paper's Fig. 5: distance at each layer and probability of the true class against
    the transform's strength, one line per image.

    Args:
        result: an `InvarianceCurves`.
        class_names: names indexed by class, to label each image with its true class.
        title: figure title.

    Returns:
        A Figure with L + 1 panels side by side (by default 3: early layer, late layer,
        probability).
    """
    panels = len(result.layers) + 1
    fig = NotebookFigure(figsize=(3.6 * panels + 1.4, 3.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    labels = [name if class_names is None else f"{name}: {class_names[c]}"
              for name, c in zip(result.names, result.classes)]
    curves = [*zip(result.layers, result.distances), ("", result.probabilities)]
    for ax, (path, rows) in zip(axes, curves):
        for label, row in zip(labels, rows):
            ax.plot(result.values, row, marker="o", markersize=3, label=label)
        ax.set_xlabel(UNITS[result.transform], fontsize=8)
        ax.tick_params(labelsize=7)
        if path:
            ax.set_title(f"{path}: change of the output", fontsize=9)
            ax.set_ylabel("Euclidean distance to the original", fontsize=8)
    axes[-1].set_title("probability of the true class", fontsize=9)
    axes[-1].set_ylim(-0.02, 1.02)
    fig.legend(*axes[-1].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    fig.suptitle(title or f"invariance to {result.transform} (Zeiler & Fergus 2014, Fig. 5)")
    return fig


def prepared_pixels(model, images, preprocessing="auto"):
    """The pixels of `ModelImage`s and the preprocessing that turned them into their `x`.

    Returns:
        `(pixels, preprocess)`: uint8 (N, H, W, C) and the `kvis.images.Preprocessing`.

    Raises:
        KvisError: no images, something other than `ModelImage`s, images of different sizes
            or that do not fit the model, or an `x` that `preprocessing` does not reproduce
            (the images were loaded with another preprocessing).
    """
    images = list(images)
    if not images:
        raise KvisError("no images given")
    if not all(isinstance(image, ModelImage) for image in images):
        raise KvisError("images must be kvis.ModelImage objects: load them with kvis.load_image")
    if len({image.pixels.shape for image in images}) > 1:
        sizes = ", ".join(f"{image.name} {image.pixels.shape}" for image in images)
        raise KvisError(f"images differ in size ({sizes}); load them all for the same model")
    pixels = np.stack([np.asarray(image.pixels, np.uint8) for image in images])
    check_input(model, pixels)
    preprocess = preprocessing_for_quietly(model, preprocessing)
    for image in images:
        expected = preprocess(image.pixels[None])
        if np.shape(image.x) != expected.shape or not np.allclose(image.x, expected, rtol=1e-5,
                                                                  atol=1e-4):
            raise KvisError(f"image {image.name!r} was not prepared with the "
                            f"{preprocess.name!r} preprocessing; pass the preprocessing it "
                            "was loaded with")
    return pixels, preprocess


def forward(probe_model, x, batch_size, desc):
    """Run a probe over `x` a batch at a time: yields `(start, {path: float32 array})`.

    Every batch has the same size (the last one is padded by repeating its final image), so an
    image gives bitwise the same outputs wherever it sits: backends pick kernels by batch
    size, and another kernel changes the float32 round-off (by ~1e-7 relative on CPU).
    """
    size = min(batch_size, len(x))
    for start in tqdm(range(0, len(x), size), desc=desc, unit="batch", disable=None):
        batch = x[start:start + size]
        count = len(batch)
        if count < size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], size - count, axis=0)])
        outputs = probe_model.predict_on_batch(batch)
        yield start, {path: np.asarray(value, np.float32)[:count]
                      for path, value in outputs.items()}


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


def _are_probabilities(outputs):
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
