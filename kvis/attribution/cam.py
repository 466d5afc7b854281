"""Class activation maps: Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al.
2018), Score-CAM (Wang et al. 2020), and Guided Grad-CAM (Selvaraju et al. 2017).

The CAMs share one pipeline: weigh the feature maps A_k of one spatial layer and sum them,
raw = sum_k w_k A_k; the methods differ only in the channel weights w_k. The explained class
score is the logit (a final softmax is bypassed without changing the model) or, with
`score="probability"`, the softmax probability (`kvis.core.anatomy.class_scores`). The map shown is
relu(raw), upsampled to the input size and divided by its maximum. Layers inside a nested
base model are addressed by path (`resnet50/conv5_block3_out`).
"""

import dataclasses

import cv2
import numpy as np
import tensorflow as tf

from kvis.attribution.explanation import channel_peak, make_explanation, unit_maps
from kvis.attribution.gradients import guided_backprop
from kvis.core.anatomy import last_conv_layer, spatial_node
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images
from kvis.core.models import preprocessing_for
from kvis.core.runner import compiled, rows_within, run_batches, stream_batches
from kvis.core.targets import make_target, score_pass

# How maps at the layer's resolution reach the input size (OpenCV, half-pixel centres).
UPSAMPLING = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def grad_cam(model, images, *, classes=None, score="logit", target=None, layer=None,
             upsampling="bilinear", batch_size=32, memory_mb=1024, progress=True):
    """Grad-CAM: the feature maps weighted by the mean gradient of the class score.

    w_k = mean over (i, j) of d y_c / d A_k(i, j). With the logit (the default, the paper's
    choice) Grad-CAM equals the CAM of Zhou et al. on a GlobalAveragePooling -> Dense model.

    Args:
        model: a Keras classifier (Functional or Sequential, nested base models included).
        images: what `kvis.load_image` returns (one or a list), or preprocessed float32
            (N, H, W, C) model input.
        classes: None for each image's top prediction, a class for all images, or one class per
            image; a class is an index or, where kvis knows the model's classes, a name.
        score: "logit" (pre-softmax, the paper's) or "probability".
        layer: the spatial layer to explain (default: `kvis.last_conv_layer(model)`).
        upsampling: "bilinear" (default, as pytorch-grad-cam and the paper's code) or
            "nearest" (blocky maps that show the layer's resolution), for `maps`.
        batch_size: images per compiled forward and backward pass.
        progress: show progress.

    Returns:
        An `Explanation` with method "grad-cam", `raw` and `layer` set, `values` None.

    Raises:
        KvisError: an unknown or non-spatial layer, an unknown class or an index out of range,
            an unknown score or upsampling, or images that do not fit the model.

    Example:
        >>> result = kvis.grad_cam(model, kvis.load_image("cat.jpg", model), classes="tabby")
        >>> kvis.plot_attention(result)
    """
    return _gradient_cam(model, images, "grad-cam", _grad_cam_weights, classes=classes,
                         score=score, target=target, layer=layer, upsampling=upsampling,
                         batch_size=batch_size, memory_mb=memory_mb, progress=progress)


def grad_cam_plus_plus(model, images, *, classes=None, score="logit", target=None, layer=None,
                       upsampling="bilinear", batch_size=32, memory_mb=1024, progress=True):
    """Grad-CAM++: positive gradients weighted per position, for several instances of a class.

    With g = d S / d A for the chosen score S, and the higher derivatives of exp(S) in closed
    form as in the paper (eq. 19): alpha_kij = g^2 / (2 g^2 + (sum_ab A_k(a, b)) g^3), 0 where
    the denominator is 0, and w_k = sum_ij alpha_kij relu(g_kij). The paper's S is the logit.

    Args, Raises: as for `grad_cam`.

    Returns:
        An `Explanation` with method "grad-cam++".
    """
    return _gradient_cam(model, images, "grad-cam++", _plus_plus_weights, classes=classes,
                         score=score, target=target, layer=layer, upsampling=upsampling,
                         batch_size=batch_size, memory_mb=memory_mb, progress=progress)


def score_cam(model, images, *, classes=None, score="logit", target=None, layer=None,
              upsampling="bilinear", count=None, batch_size=32, memory_mb=1024,
              progress=True):
    """Score-CAM: each feature map weighted by the class score of the image it masks.

    A_k is upsampled to the input size and scaled to [0, 1] (a constant map gives zeros). The
    mask multiplies the image's *pixels* (the model input mapped back through the model's
    preprocessing, `kvis.preprocessing_for(model).invert`), so masked-out pixels are black
    whatever the preprocessing; the masked pixels go through the preprocessing and w_k is the
    chosen score of the class on them. The paper and its code use the softmax probability:
    pass `score="probability"` for that. The default, "logit", keeps one default across
    kvis's methods; logit weights can be negative (such channels subtract from the map).

    The model runs once per channel and image, a batch of masked images per pass (made on
    the device from the maps and the pixels); channels whose map is zero everywhere add
    nothing to the map and are skipped. `count` (Faster Score-CAM, tf-keras-vis's `max_N`)
    scores only each image's `count` channels of largest variance over the map, the others
    weighing 0. The default scores every channel, as the paper does: on VGG16 (random
    weights, 128 px), 64 of 512 channels take an eighth of the passes (5 s against 48 s) but
    change `maps` (in [0, 1]) by 0.08 on average; on the trained demo model, 64 of 128
    channels change them by 0.02, 32 by 0.05 (the table: docs/attribution.md).

    Args:
        model, images, classes, layer, upsampling, progress: as for `grad_cam`.
        score: "logit" or "probability" (the paper's).
        count: None (every channel) or how many channels of largest variance to weigh
            per image, at least 1; more than the layer has keeps them all.
        batch_size: masked images per compiled forward pass (the channels of all images), at
            most what `memory_mb` allows.
        memory_mb: the budget of one pass (`kvis.core.runner.rows_within`).

    Returns:
        An `Explanation` with method "score-cam".

    Raises:
        KvisError: as for `grad_cam`; a `count` below 1 or not a whole number; a model
            whose preprocessing kvis cannot tell.

    Example:
        >>> result = kvis.score_cam(model, image, score="probability", count=64)
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, (int, np.integer))
                              or count < 1):
        raise KvisError(f"score-cam: count (how many channels to weigh) must be a whole number, "
                        f"at least 1, or None; got {count!r}")
    batch, target, path = _prepare(model, images, "score-cam", classes=classes, score=score,
                                   target=target, layer=layer, upsampling=upsampling)
    preprocessing_for(model)  # the masks are defined on pixels: refused before any pass
    batch_size = rows_within(model, memory_mb, batch_size=batch_size)
    outputs = run_batches(score_pass(model, target, layers=[path]),
                          (batch.x, *target.rows(np.arange(len(batch.x)))),
                          batch_size=batch_size, desc="score-cam", progress=progress)
    activations = outputs[path]
    if target.is_class:
        target = dataclasses.replace(target, classes=outputs["classes"])
    weights = _score_weights(model, target, batch.x, activations, upsampling=upsampling,
                             count=count, batch_size=batch_size, progress=progress)
    raw = np.einsum("nijk,nk->nij", activations, weights)
    return _explanation(model, batch, "score-cam", target, outputs, raw, path, upsampling)


def _score_weights(model, target, x, activations, *, upsampling, count, batch_size,
                   progress):
    """Score-CAM's channel weights, float32 (N, K): the target's score on each image masked
    by each of its scored channels' maps (`_scored_channels`), 0 for the others."""
    image_of, channel_of = _scored_channels(activations, count)
    weights = np.zeros((len(activations), activations.shape[-1]), np.float32)
    if not len(image_of):
        return weights
    preprocess = preprocessing_for(model)
    pixels, maps = tf.constant(preprocess.invert(x)), np.moveaxis(activations, -1, 1)
    masked = _masking(model, preprocess, activations.shape[1:3], x.shape[1:], upsampling)
    scored = score_pass(model, target)
    for rows, result in stream_batches(
            lambda images, m, *extra: scored(masked(pixels, images, m), *extra),
            len(image_of), lambda rows: (image_of[rows].astype(np.int32),
                                         maps[image_of[rows], channel_of[rows]],
                                         *target.rows(image_of[rows])),
            batch_size=batch_size, desc="score-cam masks", progress=progress):
        weights[image_of[rows], channel_of[rows]] = result["scores"]
    return weights


def _scored_channels(activations, count=None):
    """The (image, channel) pairs Score-CAM scores: per image, the `count` channels of
    largest variance over the map (all when None; ties to the lower index), less those
    whose map is zero everywhere (they add nothing whatever their weight).

    Args:
        activations: float32 (N, h, w, K), the explained layer's maps.
        count: None or an int at least 1.

    Returns:
        Two int64 arrays (P,): the image and the channel of each pair, by image.
    """
    channels = activations.shape[-1]
    kept = min(channels, count or channels)
    order = np.argsort(-activations.var(axis=(1, 2)), axis=-1, kind="stable")[:, :kept]
    live = np.take_along_axis(activations.any(axis=(1, 2)), order, axis=-1)
    return np.repeat(np.arange(len(activations)), kept)[live.ravel()], order[live]


def guided_grad_cam(model, images, *, classes=None, score="logit", target=None, layer=None,
                    upsampling="bilinear", batch_size=32, memory_mb=1024, progress=True):
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map, pixel by pixel.

    The paper's convention (Selvaraju et al. 2017, and pytorch-grad-cam): `values` are the
    guided gradients (N, H, W, C) times the upsampled Grad-CAM map normalized to [0, 1] (its
    `maps`). Without the normalization each image's values are only scaled by a positive
    number (the peak of the upsampled relu(raw)), so `maps` do not change; multiply `values`
    by that peak to undo it. Nearest instead of bilinear upsampling: `upsampling="nearest"`.

    Args, Raises: as for `grad_cam`.

    Returns:
        An `Explanation` with method "guided-grad-cam": `values` and `maps` of the product,
        `raw` and `layer` of the Grad-CAM.
    """
    coarse = grad_cam(model, images, classes=classes, score=score, target=target, layer=layer,
                      upsampling=upsampling, batch_size=batch_size, memory_mb=memory_mb,
                      progress=progress)
    fine = guided_backprop(model, images, classes=coarse.classes, score=score, target=target,
                           batch_size=batch_size, memory_mb=memory_mb, progress=progress)
    values = fine.values * coarse.maps[..., None]
    return dataclasses.replace(coarse, method="guided-grad-cam", values=values,
                               maps=unit_maps(channel_peak(values)))


def upsample(image, size, interpolation=cv2.INTER_LINEAR):
    """float32 (h, w) -> (H, W) with OpenCV (default bilinear, `cv2.INTER_LINEAR`)."""
    image = np.asarray(image, np.float32)
    if image.shape == tuple(size):
        return image
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=interpolation)


def _masking(model, preprocess, layer_size, image_shape, upsampling):
    """The compiled pass that makes Score-CAM's masked model input on the device:
    `masked(pixels (N, H, W, C), images (B,), maps (B, h, w)) -> (B, H, W, C)`: each map
    upsampled as `upsample` does (one matrix per axis, read off OpenCV), scaled to [0, 1] (a
    constant map gives zeros), times the pixels of its image, then preprocessed."""
    rows, columns = (_interpolation(small, large, UPSAMPLING[upsampling])
                     for small, large in zip(layer_size, image_shape))

    def build(jit_compile):
        def masked(pixels, images, maps):
            up = tf.einsum("bHw,Ww->bHW", tf.einsum("Hh,bhw->bHw", rows, maps), columns)
            low = tf.reduce_min(up, axis=(1, 2), keepdims=True)
            span = tf.reduce_max(up, axis=(1, 2), keepdims=True) - low
            mask = tf.math.divide_no_nan(up - low, span)
            return preprocess(tf.gather(pixels, images) * mask[..., None])

        return tf.function(masked, autograph=False, jit_compile=jit_compile, input_signature=[
            tf.TensorSpec((None, *image_shape)), tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, *layer_size))])

    return compiled(model, ("score-cam masks", preprocess, tuple(layer_size),
                            tuple(image_shape), upsampling), build)


def _interpolation(small, large, interpolation):
    """float32 (large, small): the matrix that resizes an axis of `small` values to `large`
    as `upsample` does (OpenCV's resizing is separable and linear in the values)."""
    if small == large:
        return np.eye(small, dtype=np.float32)
    return cv2.resize(np.eye(small, dtype=np.float32), (small, large),
                      interpolation=interpolation)


def _gradient_cam(model, images, method, weigh, *, classes, score, target, layer, upsampling,
                  batch_size, memory_mb, progress):
    """The shared Grad-CAM pipeline; `weigh(A, dS/dA)` gives the (N, K) channel weights."""
    batch, target, path = _prepare(model, images, method, classes=classes, score=score,
                                   target=target, layer=layer, upsampling=upsampling)
    outputs = run_batches(score_pass(model, target, layers=[path], gradient=path),
                          (batch.x, *target.rows(np.arange(len(batch.x)))),
                          batch_size=rows_within(model, memory_mb, batch_size=batch_size),
                          desc=method, progress=progress)
    activations = outputs[path]
    raw = np.einsum("nijk,nk->nij", activations, weigh(activations, outputs["gradient"]))
    return _explanation(model, batch, method, target, outputs, raw, path, upsampling)


def _grad_cam_weights(activations, gradients):
    return gradients.mean(axis=(1, 2))


def _plus_plus_weights(activations, gradients):
    squared = gradients ** 2
    denominator = 2 * squared + activations.sum(axis=(1, 2), keepdims=True) * gradients ** 3
    alpha = np.divide(squared, denominator, out=np.zeros_like(squared),
                      where=denominator != 0)
    return (alpha * np.maximum(gradients, 0)).sum(axis=(1, 2))


def _prepare(model, images, method, *, classes, score, target, layer, upsampling):
    """Checked inputs: (`kvis.core.images.Images`, the `Target`, the layer's path)."""
    if upsampling not in UPSAMPLING:
        raise KvisError(f"unknown upsampling {upsampling!r}; choose from {', '.join(UPSAMPLING)}")
    batch = as_images(model, images)
    target = make_target(model, len(batch.x), classes=classes, score=score, target=target,
                         purpose=method)
    node = spatial_node(model_graph(model), last_conv_layer(model) if layer is None else layer,
                        method)
    return batch, target, node.path


def _explanation(model, batch, method, target, outputs, raw, layer, upsampling):
    size, interpolation = batch.x.shape[1:3], UPSAMPLING[upsampling]
    maps = unit_maps(np.stack([upsample(np.maximum(r, 0), size, interpolation) for r in raw]))
    return make_explanation(model, batch, method, target, outputs, maps=maps, raw=raw,
                            layer=layer)
