"""The deconvnet of Zeiler & Fergus ("Visualizing and Understanding Convolutional Networks",
ECCV 2014), built explicitly, with its guided variant (Springenberg et al. 2015).

One activation of a layer (or one whole feature map) is kept and the rest zeroed; the signal
then goes down to the pixels layer by layer: max pooling is undone with the switches recorded
in the forward pass (`tf.nn.max_pool_with_argmax`), ReLUs rectify the signal (guided: only
where the forward pass was positive too), and convolutions apply their own filters transposed
(`tf.nn.conv2d_transpose`). Batch normalization (a per-channel scale at inference), padding,
residual additions (the signal goes down both branches), flattening and dense layers are
passed through as well. `method="gradient"` computes the same projection as an input
gradient under the deconvnet backward rule (`kvis.core.backward_rules`): the fast path for
any graph, checked against the explicit one in the tests.
"""

from dataclasses import dataclass

import numpy as np

from kvis.core.anatomy import logits_start, require_classifier, spatial_node
from kvis.core.backward_rules import (
    layer_gradients,
)
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import one_image
from kvis.core.models import class_index, class_label, expects_bgr
from kvis.core.targets import input_gradients, make_target
from kvis.core.vocabulary import DECONV_METHODS
from kvis.deconv.explicit import explicit_deconvnet
from kvis.layers.feature_maps import feature_maps
from kvis.layers.receptive_fields import receptive_fields
from kvis.plot.figures import image_grid


@dataclass(frozen=True)
class Projection:
    """Activations of one image projected back to its pixels.

    Attributes:
        signals: float32 (K, H, W, C), one projection per unit, in model-input space
            (channel order and scale of the preprocessed input).
        units: a label per projection, e.g. "#12 at (3, 4)" or "class tabby".
        channels: int (K,) the channel (or class) projected.
        positions: int (K, 2) the (row, col) of the activation kept; -1 for a whole map or a class.
        activations: float32 (K,) the value of the activation kept (the map's sum for a whole map).
        boxes: int (K, 4) `(top, left, bottom, right)`, inclusive, clipped to the image: the
            receptive field of the activation kept (`kvis.layers.receptive_fields`); the whole
            image for a whole map, a class, or a layer whose field is unknown.
        pixels: uint8 (1, H, W, C) in [0, 255], the image as the model saw it.
        names: the image's name, in a one-element list.
        layer: path of the layer projected from.
        rule: "deconvnet" or "guided".
        bgr: the model input is BGR (caffe-style preprocessing): `projection_images` reverses
            the channels to RGB.
    """

    signals: np.ndarray
    units: list
    channels: np.ndarray
    positions: np.ndarray
    activations: np.ndarray
    boxes: np.ndarray
    pixels: np.ndarray
    names: list
    layer: str
    rule: str
    bgr: bool = False


def deconvnet(model, images, layer=None, *, channels=None, count=1, whole_map=False, classes=None,
              guided=False, method="explicit", batch_size=32, progress=True):
    """Project activations of one image back to pixels.

    Follows Zeiler & Fergus: the kept activation is not normalized and the projection is in
    model-input space; `projection_images` scales each one for display.

    Args:
        model: a Keras model.
        images: one image: what `kvis.load_image` returns, or preprocessed float32 model
            input (1, H, W, C).
        layer: a spatial layer's path to project from.
        channels: the feature maps to project, one projection each; default: the `count`
            strongest (by their largest activation).
        count: how many of the strongest feature maps to project when `channels` is None.
        whole_map: keep the whole feature map instead of its strongest activation alone.
        classes: project from class scores instead of a layer (pre-softmax, one-hot): a
            class index or name, or a list of them, one projection each.
        guided: guided backpropagation: rectify also by the forward ReLU masks.
        method: "explicit" (unpooling, rectification, transposed filters) or "gradient"
            (the same quantity as an input gradient under the deconvnet rule).
        batch_size: projections computed together.
        progress: show progress.

    Returns:
        A `Projection`, which `plot_projections` draws on its own.

    Raises:
        KvisError: no layer or classes given, more than one image, a non-spatial layer, a
            layer type the explicit deconvnet cannot pass through (named), or an
            out-of-range channel or class.

    Example:
        >>> image = kvis.load_image("cat.jpg", model)
        >>> kvis.plot_projections(kvis.deconvnet(model, image, "block5_conv3", count=4))
    """
    if method not in DECONV_METHODS:
        raise KvisError(f"unknown method {method!r}; choose from {', '.join(DECONV_METHODS)}")
    if (layer is None) == (classes is None):
        raise KvisError("project from a layer or from classes, not both or neither")
    batch = one_image(model, images, "the deconvnet projects")
    graph = model_graph(model)
    rule = "guided" if guided else "deconvnet"
    start = _class_start(model, graph, classes) if classes is not None else _layer_start(
        model, graph, batch.x, layer, channels, count, whole_map)
    inputs = np.repeat(batch.x, len(start.units), axis=0)
    if method == "gradient" and classes is not None:
        target = make_target(model, len(inputs), classes=start.channels, purpose="deconvnet")
        signals = input_gradients(model, inputs, target, rule=rule, batch_size=batch_size,
                                  desc=rule, progress=progress)["gradient"]
    elif method == "gradient":
        signals = layer_gradients(model, inputs, start.path, start.signal, rule=rule,
                                  batch_size=batch_size, progress=progress)[0]
    else:
        signals = explicit_deconvnet(model, inputs, start.path, start.signal,
                                     before_activation=start.before_activation, guided=guided,
                                     batch_size=batch_size, progress=progress)
    boxes = _crop_boxes(receptive_fields(model)[start.path], start.positions,
                        batch.pixels.shape[1:3])
    return Projection(signals, start.units, start.channels, start.positions, start.activations,
                      boxes, batch.pixels, list(batch.names), start.path, rule,
                      expects_bgr(model))


def projection_images(result):
    """Projections as displayable RGB images: float32 (K, H, W, C) in [0, 1], mid-gray is zero.

    Each projection is scaled by its own largest magnitude; a BGR model input
    (`result.bgr`) is reversed to RGB.
    """
    signals = result.signals[..., ::-1] if result.bgr else result.signals
    scale = np.abs(signals).max(axis=(1, 2, 3), keepdims=True)
    return 0.5 + 0.5 * signals / np.where(scale > 0, scale, 1.0)


def plot_projections(result, *, fig=None, title=None):
    """Each projection beside the image patch its activation sees.

    Both are cropped to the activation's receptive field (`result.boxes`); projections of a
    whole map or a class show the whole image.

    Args:
        result: a `Projection`.
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: figure title (default: the image, the rule and the layer).

    Returns:
        A Figure with two tiles per unit: the projection, then the image patch.
    """
    images = projection_images(result)
    pixels = result.pixels[0].astype(np.float32) / 255
    tiles, labels = [], []
    for k, unit in enumerate(result.units):
        top, left, bottom, right = result.boxes[k]
        crop = np.s_[top:bottom + 1, left:right + 1]
        tiles += [images[k][crop], pixels[crop]]
        labels += [f"{unit}\n{result.activations[k]:.3g}", "image patch"]
    return image_grid(tiles, titles=labels, cols=min(6, 2 * len(result.units)), cmap="gray",
                      vmin=0, vmax=1, fig=fig,
                      title=title or f"{result.names[0]}: {result.rule} from {result.layer}")


@dataclass(frozen=True)
class _Start:
    """Where a projection starts: the signal at one node's output, or before its softmax."""

    path: str
    signal: np.ndarray
    before_activation: bool
    units: list
    channels: np.ndarray
    positions: np.ndarray
    activations: np.ndarray


def _layer_start(model, graph, x, layer, channels, count, whole_map):
    try:
        node = spatial_node(graph, layer, "the deconvnet")
    except KvisError as error:
        raise KvisError(f"{error}; project from a class instead") from None
    activation = feature_maps(model, x, node.path, progress=False)[node.path][0]
    peaks = activation.max(axis=(0, 1))
    if channels is None:
        channels = np.argsort(-peaks, kind="stable")[:count]
    channels = np.asarray(channels, int)
    if bad := [int(c) for c in channels if not 0 <= c < activation.shape[-1]]:
        raise KvisError(f"{node.path} filter index {bad[0]} is out of range "
                        f"(0-{activation.shape[-1] - 1})")
    signal = np.zeros((len(channels),) + activation.shape, np.float32)
    positions = np.full((len(channels), 2), -1)
    for k, c in enumerate(channels):
        if whole_map:
            signal[k, ..., c] = activation[..., c]
        else:
            positions[k] = np.unravel_index(np.argmax(activation[..., c]), activation.shape[:2])
            signal[k, positions[k][0], positions[k][1], c] = peaks[c]
    kept = signal.sum(axis=(1, 2, 3))
    units = [f"#{c}" + ("" if whole_map else f" at ({p[0]}, {p[1]})")
             for c, p in zip(channels, positions)]
    return _Start(node.path, signal, False, units, channels, positions, kept)


def _class_start(model, graph, classes):
    require_classifier(model, "the deconvnet from a class")
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    classes = np.array([class_index(model, c) for c in classes], int)
    path, before_activation = logits_start(graph)
    signal = np.eye(graph.nodes[path].output.shape[-1], dtype=np.float32)[classes]
    return _Start(path, signal, before_activation,
                  [f"class {class_label(model, c)}" for c in classes], classes,
                  np.full((len(classes), 2), -1), np.ones(len(classes), np.float32))


def _crop_boxes(field, positions, size):
    """Per unit `(top, left, bottom, right)`, inclusive: the receptive field of the unit at
    each position, clipped to an image of `size`; the whole image for position -1."""
    boxes = np.tile([0, 0, size[0] - 1, size[1] - 1], (len(positions), 1))
    for k, (row, col) in enumerate(positions):
        if field is not None and row >= 0:
            top, left, bottom, right = field.box(row, col)
            boxes[k] = (max(top, 0), max(left, 0), min(bottom, size[0] - 1),
                        min(right, size[1] - 1))
    return boxes

