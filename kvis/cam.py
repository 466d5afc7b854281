"""Class activation maps: Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al.
2018), Score-CAM (Wang et al. 2020), and Guided Grad-CAM (Selvaraju et al. 2017).

The CAMs share one pipeline: weigh the feature maps A_k of one spatial layer and sum them,
raw = sum_k w_k A_k; the methods differ only in the channel weights w_k. The explained class
score is the logit (a final softmax is bypassed without changing the model) or, with
`score="probability"`, the softmax probability (`kvis.anatomy.class_scores`). The map shown is
relu(raw), upsampled to the input size and divided by its maximum. Layers inside a nested
base model are addressed by path (`resnet50/conv5_block3_out`).
"""

import dataclasses

import cv2
import numpy as np
import tensorflow as tf

from kvis.anatomy import class_scores, last_conv_layer, spatial_node
from kvis.attribution import explained_images, guided_backprop, make_explanation, unit_maps
from kvis.errors import KvisError
from kvis.graph import model_graph, probe
from kvis.images import unit_range
from kvis.models import preprocessing_for
from kvis.runner import compiled, run_batches

# How maps at the layer's resolution reach the input size (OpenCV, half-pixel centres).
UPSAMPLING = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def grad_cam(model, images, *, classes=None, score="logit", layer=None, upsampling="bilinear",
             batch_size=32, progress=True):
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
    return _gradient_cam(model, images, "grad-cam", _grad_cam_weights, classes, score, layer,
                         upsampling, batch_size, progress)


def grad_cam_plus_plus(model, images, *, classes=None, score="logit", layer=None,
                       upsampling="bilinear", batch_size=32, progress=True):
    """Grad-CAM++: positive gradients weighted per position, for several instances of a class.

    With g = d S / d A for the chosen score S, and the higher derivatives of exp(S) in closed
    form as in the paper (eq. 19): alpha_kij = g^2 / (2 g^2 + (sum_ab A_k(a, b)) g^3), 0 where
    the denominator is 0, and w_k = sum_ij alpha_kij relu(g_kij). The paper's S is the logit.

    Args, Raises: as for `grad_cam`.

    Returns:
        An `Explanation` with method "grad-cam++".
    """
    return _gradient_cam(model, images, "grad-cam++", _plus_plus_weights, classes, score, layer,
                         upsampling, batch_size, progress)


def score_cam(model, images, *, classes=None, score="logit", layer=None, upsampling="bilinear",
              batch_size=32, progress=True):
    """Score-CAM: each feature map weighted by the class score of the image it masks.

    A_k is upsampled to the input size and scaled to [0, 1] (a constant map gives zeros). The
    mask multiplies the image's *pixels* (the model input mapped back through the model's
    preprocessing, `kvis.preprocessing_for(model).invert`), so masked-out pixels are black
    whatever the preprocessing; the masked pixels go through the preprocessing and w_k is the
    chosen score of the class on them. The paper and its code use the softmax probability:
    pass `score="probability"` for that. The default, "logit", keeps one default across
    kvis's methods; logit weights can be negative (such channels subtract from the map).

    The model runs once per channel and image: slow for wide layers (the progress shows the
    masked batches).

    Args:
        model, images, classes, layer, upsampling, progress: as for `grad_cam`.
        score: "logit" or "probability" (the paper's).
        batch_size: masked images per compiled forward pass (all channels of all images).

    Returns:
        An `Explanation` with method "score-cam".

    Raises:
        KvisError: as for `grad_cam`; a model whose preprocessing kvis cannot tell.
    """
    batch, wanted, path = _prepare(model, images, classes, score, layer, upsampling, "score-cam")
    preprocess = preprocessing_for(model)
    forward = compiled(model, ("cam", path, score, False),
                       lambda: _cam_step(model, path, score, gradients=False))
    activations, scores, explained = run_batches(forward, (batch.x, wanted),
                                                 batch_size=batch_size, desc="score-cam",
                                                 progress=progress)
    pixels = preprocess.invert(batch.x)
    count, channels = len(batch.x), activations.shape[-1]
    size, method = batch.x.shape[1:3], UPSAMPLING[upsampling]
    rate = compiled(model, ("scores", score), lambda: _score_step(model, score))

    def masked_scores(image_of, channel_of):
        image_of, channel_of = image_of.numpy(), channel_of.numpy()
        masks = np.stack([unit_range(upsample(activations[i, ..., k], size, method))
                          for i, k in zip(image_of, channel_of)])
        x = preprocess(pixels[image_of] * masks[..., None])
        return rate(tf.constant(x), tf.constant(explained[image_of], tf.int32))

    pairs = np.arange(count * channels)
    weights = run_batches(masked_scores, (pairs // channels, pairs % channels),
                          batch_size=batch_size, desc="score-cam masks", progress=progress)
    raw = np.einsum("nijk,nk->nij", activations, weights.reshape(count, channels))
    return _explanation(model, batch, "score-cam", raw, path, explained, scores, score,
                        upsampling)


def guided_grad_cam(model, images, *, classes=None, score="logit", layer=None,
                    upsampling="bilinear", batch_size=32, progress=True):
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
    coarse = grad_cam(model, images, classes=classes, score=score, layer=layer,
                      upsampling=upsampling, batch_size=batch_size, progress=progress)
    fine = guided_backprop(model, images, classes=coarse.classes, score=score,
                           batch_size=batch_size, progress=progress)
    values = fine.values * coarse.maps[..., None]
    return dataclasses.replace(coarse, method="guided-grad-cam", values=values,
                               maps=unit_maps(np.abs(values).max(axis=-1)))


def upsample(image, size, interpolation=cv2.INTER_LINEAR):
    """float32 (h, w) -> (H, W) with OpenCV (default bilinear, `cv2.INTER_LINEAR`)."""
    image = np.asarray(image, np.float32)
    if image.shape == tuple(size):
        return image
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=interpolation)


def _gradient_cam(model, images, method, weigh, classes, score, layer, upsampling, batch_size,
                  progress):
    """The shared Grad-CAM pipeline; `weigh(A, dS/dA)` gives the (N, K) channel weights."""
    batch, wanted, path = _prepare(model, images, classes, score, layer, upsampling, method)
    step = compiled(model, ("cam", path, score, True),
                    lambda: _cam_step(model, path, score, gradients=True))
    activations, scores, explained, gradients = run_batches(
        step, (batch.x, wanted), batch_size=batch_size, desc=method, progress=progress)
    raw = np.einsum("nijk,nk->nij", activations, weigh(activations, gradients))
    return _explanation(model, batch, method, raw, path, explained, scores, score, upsampling)


def _grad_cam_weights(activations, gradients):
    return gradients.mean(axis=(1, 2))


def _plus_plus_weights(activations, gradients):
    squared = gradients ** 2
    denominator = 2 * squared + activations.sum(axis=(1, 2), keepdims=True) * gradients ** 3
    alpha = np.divide(squared, denominator, out=np.zeros_like(squared),
                      where=denominator != 0)
    return (alpha * np.maximum(gradients, 0)).sum(axis=(1, 2))


def _cam_step(model, path, score, *, gradients):
    """A compiled pass: (images, wanted) -> (A, scores, classes[, d score / d A]).

    `wanted` holds a class per image, or -1 for the image's top prediction.
    """
    head, read = class_scores(model_graph(model), score)
    outputs_of = probe(model, [path, head])

    def forward(images, wanted):
        outputs = outputs_of(images, training=False)
        every_score = read(outputs[head])
        top = tf.argmax(every_score, axis=-1, output_type=tf.int32)
        picked = tf.where(wanted < 0, top, wanted)
        return outputs[path], tf.gather(every_score, picked, axis=1, batch_dims=1), picked

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])),
                                  tf.TensorSpec((None,), tf.int32)])
    def step(images, wanted):
        if not gradients:
            return forward(images, wanted)
        with tf.GradientTape() as tape:
            activations, scores, picked = forward(images, wanted)
            total = tf.reduce_sum(scores)
        return activations, scores, picked, tape.gradient(
            total, activations, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return step


def _score_step(model, score):
    """A compiled forward pass: (images, classes) -> each image's score of its class."""
    head, read = class_scores(model_graph(model), score)
    outputs_of = probe(model, [head])

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])),
                                  tf.TensorSpec((None,), tf.int32)])
    def step(images, classes):
        every_score = read(outputs_of(images, training=False)[head])
        return tf.gather(every_score, classes, axis=1, batch_dims=1)

    return step


def _prepare(model, images, classes, score, layer, upsampling, method):
    """Checked inputs: (images, int32 (N,) class per image or -1 for the top one, layer path)."""
    if upsampling not in UPSAMPLING:
        raise KvisError(f"unknown upsampling {upsampling!r}; choose from {', '.join(UPSAMPLING)}")
    batch, wanted = explained_images(model, images, classes, score, method)
    node = spatial_node(model_graph(model), last_conv_layer(model) if layer is None else layer,
                        method)
    return batch, wanted.astype(np.int32), node.path


def _explanation(model, batch, method, raw, layer, classes, scores, score, upsampling):
    size, interpolation = batch.x.shape[1:3], UPSAMPLING[upsampling]
    maps = unit_maps(np.stack([upsample(np.maximum(r, 0), size, interpolation) for r in raw]))
    return make_explanation(model, batch, method, classes=classes, scores=scores, score=score,
                            maps=maps, raw=raw, layer=layer)
