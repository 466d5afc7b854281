"""Class attention maps: where in an image a network found the evidence for a class.

Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018) and Score-CAM (Wang
et al. 2020) share one pipeline: weigh the feature maps A_k of one spatial layer and sum them,
raw = sum_k w_k A_k; the methods differ only in the channel weights w_k. The class score is the
pre-softmax logit: a final softmax is bypassed (`kvis.objectives.logits`) without
changing the model. Layers inside a nested base model are addressed by path
(`resnet50/conv5_block3_out`).
"""

import weakref
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kvis.anatomy import last_conv_layer, logits
from kvis.errors import KvisError
from kvis.graph import model_graph, probe
from kvis.images import check_input
from kvis.models import class_indices
from kvis.runner import quiet_retracing

_compiled = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class AttentionMap:
    """Class attention maps for a batch of images.

    Attributes:
        maps: float32 (N, H, W) in [0, 1] at the model's input size: the raw map with negative
            values set to zero, upsampled (bilinear) and divided by its maximum; a map with no
            positive value stays all zero.
        raw: float32 (N, h, w), sum_k w_k A_k at the layer's resolution, before any ReLU or
            normalization.
        classes: int64 (N,) the class explained for each image.
        layer: the path of the explained layer.
        method: "grad-cam", "grad-cam++" or "score-cam".
    """

    maps: np.ndarray
    raw: np.ndarray
    classes: np.ndarray
    layer: str
    method: str


def grad_cam(model, x, *, classes=None, layer=None, batch_size=32):
    """Grad-CAM: feature maps weighted by the mean gradient of the class score.

    w_k = mean over (i, j) of d y_c / d A_k(i, j), where y_c is the pre-softmax score.

    Args:
        model: a Keras classifier (Functional or Sequential, nested base models included).
        x: float32 (N, H, W, C), preprocessed for the model (e.g. `load_image(...).x`).
        classes: None for each image's top prediction, a class for all images, or one class per
            image; a class is an index or, where kvis knows the model's classes, a name.
        layer: the spatial layer to explain (default: `last_conv_layer(model)`).
        batch_size: images per compiled forward and backward pass.

    Returns:
        An `AttentionMap` with method "grad-cam".

    Raises:
        KvisError: an unknown or non-spatial layer, an unknown class or an index out of range,
            or images that do not fit the model.

    Example:
        >>> result = kvis.grad_cam(model, kvis.load_image("cat.jpg", model).x)
    """
    return _gradient_cam(model, x, classes, layer, batch_size, "grad-cam", _grad_cam_weights)


def grad_cam_plus_plus(model, x, *, classes=None, layer=None, batch_size=32):
    """Grad-CAM++: positive gradients weighted per position, for several instances of a class.

    With g = d y_c / d A (the higher derivatives of exp(y_c) in closed form):
    alpha_kij = g^2 / (2 g^2 + (sum_ab A_k(a, b)) g^3), 0 where the denominator is 0, and
    w_k = sum_ij alpha_kij relu(g_kij).

    Args, Returns and Raises as for `grad_cam`; the method is "grad-cam++".
    """
    return _gradient_cam(model, x, classes, layer, batch_size, "grad-cam++",
                         _plus_plus_weights)


def score_cam(model, x, *, classes=None, layer=None, batch_size=32):
    """Score-CAM: each feature map weighted by the class probability of the input it masks.

    A_k is upsampled to the input size, scaled to [0, 1] (a constant map gives zeros) and
    multiplied into the preprocessed input; w_k is the softmax probability of the class on that
    masked input. The model runs once per channel and image: slow for wide layers (a progress
    bar shows the batches).

    Args:
        model, x, classes, layer: as for `grad_cam`.
        batch_size: masked images per compiled forward pass (all channels of all images).

    Returns:
        An `AttentionMap` with method "score-cam".

    Raises:
        KvisError: as for `grad_cam`.
    """
    x, path, wanted = _prepare(model, x, classes, layer, batch_size, "score-cam")
    forward = _compile(model, path, x.shape[1:], gradients=False)
    parts = [forward(x[s:s + batch_size], wanted[s:s + batch_size])
             for s in range(0, len(x), batch_size)]
    activations = np.concatenate([p[0].numpy() for p in parts])
    explained = np.concatenate([p[1].numpy() for p in parts])
    count, channels = len(x), activations.shape[-1]
    weights = np.empty(count * channels, np.float32)
    size = x.shape[1:3]
    for start in _batches(count * channels, batch_size, "score-cam"):
        pairs = np.arange(start, min(start + batch_size, count * channels))
        image_of, channel_of = pairs // channels, pairs % channels
        masks = np.stack([_unit_range(upsample(activations[i, ..., k], size))
                          for i, k in zip(image_of, channel_of)])
        logits = forward(x[image_of] * masks[..., None], explained[image_of])[2]
        probabilities = tf.nn.softmax(logits).numpy()
        weights[pairs] = probabilities[np.arange(len(pairs)), explained[image_of]]
    raw = np.einsum("nijk,nk->nij", activations, weights.reshape(count, channels))
    return _result(raw, size, explained, path, "score-cam")


def _gradient_cam(model, x, classes, layer, batch_size, method, weigh):
    """The shared Grad-CAM pipeline; `weigh(A, dy/dA)` gives the (N, K) channel weights."""
    x, path, wanted = _prepare(model, x, classes, layer, batch_size, method)
    step = _compile(model, path, x.shape[1:], gradients=True)
    raws, explained = [], []
    for start in _batches(len(x), batch_size, method):
        activations, picked, gradients = (t.numpy() for t in step(
            x[start:start + batch_size], wanted[start:start + batch_size]))
        raws.append(np.einsum("nijk,nk->nij", activations, weigh(activations, gradients)))
        explained.append(picked)
    return _result(np.concatenate(raws), x.shape[1:3], np.concatenate(explained), path, method)


def _grad_cam_weights(activations, gradients):
    return gradients.mean(axis=(1, 2))


def _plus_plus_weights(activations, gradients):
    squared = gradients ** 2
    denominator = 2 * squared + activations.sum(axis=(1, 2), keepdims=True) * gradients ** 3
    alpha = np.divide(squared, denominator, out=np.zeros_like(squared),
                      where=denominator != 0)
    return (alpha * np.maximum(gradients, 0)).sum(axis=(1, 2))


def _compile(model, path, image_shape, *, gradients):
    """A compiled pass over a batch: (images, wanted) -> (A, classes, d score / d A or logits).

    `wanted` holds a class per image, or -1 for the image's top prediction; the score is the
    pre-softmax logit (`objectives.logits`). The traced function is cached per model and layer
    (tracing a large model costs seconds, more than a batch); it reads the model's variables,
    so later weight changes are seen.
    """
    cache = _compiled.setdefault(model, {})
    key = (path, tuple(image_shape), gradients)
    if key not in cache:
        head, read_logits = logits(model_graph(model))
        outputs_of = probe(model, [path, head])

        def scores(images, wanted):
            outputs = outputs_of(images, training=False)
            logits = read_logits(outputs[head])
            top = tf.argmax(logits, axis=-1, output_type=tf.int32)
            return outputs[path], tf.where(wanted < 0, top, wanted), logits

        @tf.function(input_signature=[tf.TensorSpec((None, *image_shape)),
                                      tf.TensorSpec((None,), tf.int32)])
        def run(images, wanted):
            if not gradients:
                return scores(images, wanted)
            with tf.GradientTape() as tape:
                activations, picked, logits = scores(images, wanted)
                score = tf.reduce_sum(tf.gather(logits, picked, axis=1, batch_dims=1))
            return activations, picked, tape.gradient(
                score, activations, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        with quiet_retracing():  # trace now: one trace per model and layer, by design
            run.get_concrete_function()
        cache[key] = run
    return cache[key]


def _prepare(model, x, classes, layer, batch_size, method):
    """Checked inputs: (x, layer path, int32 (N,) class per image or -1 for the top one)."""
    x = check_input(model, x)
    if batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    if len(model.output_shape) != 2:
        raise KvisError(f"{method} needs a classifier with output (N, classes); model "
                        f"{model.name!r} has output shape {model.output_shape}")
    node = model_graph(model).node(last_conv_layer(model) if layer is None else layer)
    if _rank(node.output) != 4:
        raise KvisError(f"{method} needs a spatial layer; {node.path!r} "
                        f"({type(node.layer).__name__}) has output shape "
                        f"{tuple(getattr(node.output, 'shape', ()))}")
    return x, node.path, class_indices(model, classes, len(x)).astype(np.int32)


def _result(raw, size, classes, layer, method):
    raw = raw.astype(np.float32)
    maps = np.stack([upsample(np.maximum(r, 0), size) for r in raw])
    peaks = maps.max(axis=(1, 2), keepdims=True)
    maps = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
    return AttentionMap(maps, raw, classes.astype(np.int64), layer, method)


def upsample(image, size):
    """float32 (h, w) -> (H, W), bilinear (cv2.INTER_LINEAR)."""
    image = np.asarray(image, np.float32)
    if image.shape == tuple(size):
        return image
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def _unit_range(mask):
    low, high = float(mask.min()), float(mask.max())
    return (mask - low) / (high - low) if high > low else np.zeros_like(mask)


def _batches(count, batch_size, method):
    return tqdm(range(0, count, batch_size), desc=method, unit="batch", disable=None)


def _rank(output):
    return len(getattr(output, "shape", ()))
