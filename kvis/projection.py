"""The deconvnet of Zeiler & Fergus ("Visualizing and Understanding Convolutional Networks",
ECCV 2014), built explicitly, with its guided variant (Springenberg et al. 2015).

One activation of a layer (or one whole feature map) is kept and the rest zeroed; the signal
then goes down to the pixels layer by layer: max pooling is undone with the switches recorded
in the forward pass (`tf.nn.max_pool_with_argmax`), ReLUs rectify the signal (guided: only
where the forward pass was positive too), and convolutions apply their own filters transposed
(`tf.nn.conv2d_transpose`). Batch normalization (a per-channel scale at inference), padding,
residual additions (the signal goes down both branches), flattening and dense layers are
passed through as well. `method="gradient"` computes the same projection as an input
gradient under the deconvnet backward rule (`kvis.backprop`): the fast path for any graph,
checked against the explicit one in the tests.
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kvis import objectives
from kvis.anatomy import logits_start
from kvis.backprop import class_gradients, forward_values, is_relu, is_relu_layer, layer_gradients
from kvis.errors import KvisError
from kvis.graph import model_graph
from kvis.plot import image_grid
from kvis.receptive import receptive_fields

METHODS = ("explicit", "gradient")


@dataclass(frozen=True)
class Projection:
    """Activations projected back to the input.

    Attributes:
        signals: float32 (K, H, W, C), one projection per unit, in model-input space
            (channel order and scale of the preprocessed input).
        units: a label per projection, e.g. "#12 at (3, 4)" or "class #281".
        channels: int (K,) the channel (or class) projected.
        positions: int (K, 2) the (row, col) of the activation kept; -1 for a whole map or a class.
        activations: float32 (K,) the value of the activation kept (the map's sum for a whole map).
        layer: path of the layer projected from.
        rule: "deconvnet" or "guided".
    """

    signals: np.ndarray
    units: list
    channels: np.ndarray
    positions: np.ndarray
    activations: np.ndarray
    layer: str
    rule: str


def deconvnet(model, x, layer=None, *, channels=None, top=1, whole_map=False, classes=None,
              guided=False, method="explicit"):
    """Project activations of one image back to pixels.

    Args:
        model: a Keras model.
        x: float32 (1, H, W, C), one preprocessed image (`kvis.load_image(...).x`).
        layer: a spatial layer's path to project from.
        channels: the feature maps to project, one projection each; default: the `top`
            strongest (by their largest activation).
        top: how many of the strongest feature maps to project when `channels` is None.
        whole_map: keep the whole feature map instead of its strongest activation alone.
        classes: project from class scores instead of a layer (pre-softmax, one-hot).
        guided: guided backpropagation: rectify also by the forward ReLU masks.
        method: "explicit" (unpooling, rectification, transposed filters) or "gradient"
            (the same quantity as an input gradient under the deconvnet rule).

    Returns:
        A `Projection`.

    Raises:
        KvisError: no layer or classes given, a non-spatial layer, a layer type the explicit
            deconvnet cannot pass through (named), or an out-of-range channel or class.
    """
    if method not in METHODS:
        raise KvisError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if (layer is None) == (classes is None):
        raise KvisError("project from a layer or from classes, not both or neither")
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or len(x) != 1:
        raise KvisError(f"the deconvnet projects one image, (1, H, W, C); got shape {x.shape}")
    graph = model_graph(model)
    rule = "guided" if guided else "deconvnet"
    start = _class_start(graph, classes) if classes is not None else _layer_start(
        graph, x, layer, channels, top, whole_map)
    batch = np.repeat(x, len(start.units), axis=0)
    if method == "gradient" and classes is not None:
        signals = class_gradients(model, batch, start.channels, rule=rule)[0]
    elif method == "gradient":
        signals = layer_gradients(model, batch, start.path, start.signal, rule=rule)[0]
    else:
        signals = _explicit(graph, batch, start, guided).numpy()
    return Projection(signals, start.units, start.channels, start.positions, start.activations,
                      start.path, rule)


def projection_images(result, *, bgr=False):
    """Projections as displayable images: float32 (K, H, W, C) in [0, 1], mid-gray is zero.

    Each projection is scaled by its own largest magnitude. `bgr`: the model input is BGR
    (caffe-style preprocessing), so the channels are reversed to RGB.
    """
    signals = result.signals[..., ::-1] if bgr else result.signals
    scale = np.abs(signals).max(axis=(1, 2, 3), keepdims=True)
    return 0.5 + 0.5 * signals / np.where(scale > 0, scale, 1.0)


def plot_projections(result, pixels, *, model=None, bgr=False, title=None):
    """Each projection beside the image patch its activation sees.

    Args:
        result: a `Projection`.
        pixels: uint8 (H, W, C), the image as the model saw it (`ModelImage.pixels`).
        model: the model, to crop both to the activation's receptive field (else whole).
        bgr: the model input is BGR (see `projection_images`).
        title: figure title.

    Returns:
        A Figure with two tiles per unit: the projection, then the image patch.
    """
    images = projection_images(result, bgr=bgr)
    tiles, labels = [], []
    field = receptive_fields(model)[result.layer] if model is not None else None
    for k, unit in enumerate(result.units):
        crop = _crop_box(field, result.positions[k], pixels.shape[:2])
        projection, patch = (a[crop] for a in (images[k], pixels.astype(np.float32) / 255))
        tiles += [_displayable(projection), _displayable(patch)]
        labels += [f"{unit}\n{result.activations[k]:.3g}", "image patch"]
    return image_grid(tiles, titles=labels, cols=min(6, 2 * len(result.units)), cmap="gray",
                      vmin=0, vmax=1, title=title or f"{result.rule} from {result.layer}")


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


def _layer_start(graph, x, layer, channels, top, whole_map):
    node = graph.node(layer)
    if len(getattr(node.output, "shape", ())) != 4:
        raise KvisError(f"the deconvnet projects from a spatial layer; {node.path!r} "
                        f"({type(node.layer).__name__}) has output shape "
                        f"{tuple(node.output.shape)}; project from a class instead")
    activation = forward_values(graph, tf.constant(x))[id(node.output)].numpy()[0]
    peaks = activation.max(axis=(0, 1))
    if channels is None:
        channels = np.argsort(-peaks, kind="stable")[:top]
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


def _class_start(graph, classes):
    classes = np.atleast_1d(np.asarray(classes, int))
    objectives.class_logit(classes).bind(graph)  # validates the class indices
    path, before_activation = logits_start(graph)
    signal = np.eye(graph.nodes[path].output.shape[-1], dtype=np.float32)[classes]
    return _Start(path, signal, before_activation, [f"class #{c}" for c in classes],
                  classes, np.full((len(classes), 2), -1), np.ones(len(classes), np.float32))


def _explicit(graph, x, start, guided):
    values = forward_values(graph, tf.constant(x))
    order = list(graph.nodes.values())
    end = [node.path for node in order].index(start.path)
    signals = {id(order[end].output): tf.constant(start.signal)}
    for position in range(end, -1, -1):
        node = order[position]
        signal = signals.pop(id(node.output), None)
        if signal is None or node.is_container:
            continue
        skip_activation = start.before_activation and position == end
        inputs = [values[id(t)] for t in node.inputs]
        downward = _down(node, signal, inputs, values[id(node.output)], guided, skip_activation)
        for tensor, part in zip(node.inputs, downward):
            signals[id(tensor)] = signals[id(tensor)] + part if id(tensor) in signals else part
    return signals[id(graph.input)]


def _down(node, signal, inputs, output, guided, skip_activation):
    """The signal at a layer's inputs, from the signal at its output: one deconvnet layer."""
    layer = node.layer
    if is_relu_layer(layer):
        return [_rectify(signal, output, guided)]
    if isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.linear:
        return [signal]
    if not skip_activation:
        signal = _through_activation(node, signal, output, guided)
    (inp, *_) = inputs
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [tf.nn.depthwise_conv2d_backprop_input(
            tf.shape(inp), layer.kernel, signal, (1, *layer.strides, 1),
            layer.padding.upper(), dilations=layer.dilation_rate)]
    elif isinstance(layer, keras.layers.Conv2D) and layer.groups == 1:
        return [tf.nn.conv2d_transpose(signal, layer.kernel, tf.shape(inp),
                                       (1, *layer.strides, 1), layer.padding.upper(),
                                       dilations=(1, *layer.dilation_rate, 1))]
    elif isinstance(layer, keras.layers.Dense):
        return [tf.matmul(signal, layer.kernel, transpose_b=True)]
    elif isinstance(layer, keras.layers.MaxPooling2D):
        return [_unpool(signal, inp, layer)]
    elif isinstance(layer, keras.layers.AveragePooling2D):
        return [tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.shape(inp), grad=signal,
                                       ksize=(1, *layer.pool_size, 1),
                                       strides=(1, *layer.strides, 1),
                                       padding=layer.padding.upper())]
    elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
        height, width = inp.shape[1:3]
        spread = tf.reshape(signal, (-1, 1, 1, inp.shape[-1])) / float(height * width)
        return [tf.broadcast_to(spread, tf.shape(inp))]
    elif isinstance(layer, keras.layers.BatchNormalization):
        scale = tf.math.rsqrt(layer.moving_variance + layer.epsilon)
        return [signal * (scale * layer.gamma if layer.scale else scale)]
    elif isinstance(layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        height, width = output.shape[1:3]
        return [signal[:, top:height - bottom, left:width - right, :]]
    elif isinstance(layer, keras.layers.Add):
        return [signal] * len(inputs)
    elif isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
        return [tf.reshape(signal, tf.shape(inp))]
    elif isinstance(layer, (keras.layers.Dropout, keras.layers.InputLayer)):
        return [signal]
    raise KvisError(f"the deconvnet cannot pass through layer {node.path!r} "
                    f"({type(layer).__name__}); method='gradient' works for any graph")


def _through_activation(node, signal, output, guided):
    """The signal below a layer's own (fused) activation: rectified for a ReLU."""
    activation = getattr(node.layer, "activation", None)
    if is_relu(activation):
        return _rectify(signal, output, guided)
    if activation in (None, keras.activations.linear):
        return signal
    raise KvisError(f"the deconvnet cannot pass through the {activation.__name__} activation "
                    f"of layer {node.path!r}; method='gradient' works for any graph")


def _rectify(signal, output, guided):
    rectified = tf.nn.relu(signal)
    return rectified * tf.cast(output > 0, signal.dtype) if guided else rectified


def _unpool(signal, inp, layer):
    """Undo max pooling: each pooled value goes back to where its maximum came from."""
    _, switches = tf.nn.max_pool_with_argmax(inp, (1, *layer.pool_size, 1),
                                             (1, *layer.strides, 1), layer.padding.upper(),
                                             include_batch_in_index=True)
    flat = tf.scatter_nd(tf.reshape(switches, (-1, 1)), tf.reshape(signal, (-1,)),
                         tf.cast(tf.reshape(tf.size(inp), (1,)), tf.int64))
    return tf.reshape(flat, tf.shape(inp))


def _crop_box(field, position, size):
    if field is None or position[0] < 0:
        return np.s_[:, :]
    top, left, bottom, right = field.box(*position)
    return np.s_[max(top, 0):min(bottom, size[0] - 1) + 1, max(left, 0):min(right, size[1] - 1) + 1]


def _displayable(tile):
    return tile[..., 0] if tile.shape[-1] == 1 else tile
