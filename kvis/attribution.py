"""Gradient attributions of a class score to the input pixels: vanilla saliency (Simonyan et
al. 2013), guided backpropagation (Springenberg et al. 2015), SmoothGrad (Smilkov et al. 2017)
and Integrated Gradients (Sundararajan et al. 2017).

All explain the pre-softmax class score (a final softmax is bypassed, the model unchanged) and
run through `kvis.backprop.class_gradients`: samples are batched, so N noisy copies or N
interpolation steps cost N / batch_size compiled passes, and the top class is found in the
same pass.
"""

from dataclasses import dataclass

import numpy as np

from kvis.backprop import class_gradients
from kvis.errors import KvisError
from kvis.images import check_input
from kvis.models import class_indices, preprocessing_for


@dataclass(frozen=True)
class Attribution:
    """Per-pixel attributions of class scores.

    Attributes:
        values: float32 (N, H, W, C) in model-input space (signed).
        maps: float32 (N, H, W) in [0, 1]: the largest magnitude over channels, scaled per
            image by its maximum, for display.
        classes: int64 (N,) the class explained for each image.
        scores: float32 (N,) those classes' pre-softmax scores on the images.
        method: the method's name.
    """

    values: np.ndarray
    maps: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    method: str


def saliency(model, x, *, classes=None, guided=False, batch_size=32):
    """Vanilla gradient saliency: d score / d input; `guided=True` for guided backprop.

    Args:
        model: a Keras classifier.
        x: float32 (N, H, W, C), preprocessed model input.
        classes: None (each image's top prediction), one class (index or name) for all,
            or one per image.
        guided: backpropagate only positive signal through positive ReLUs.
        batch_size: images per compiled pass.

    Returns:
        An `Attribution`.
    """
    x = check_input(model, x)
    values, scores, classes = class_gradients(model, x, class_indices(model, classes, len(x)),
                                              rule="guided" if guided else "gradient",
                                              batch_size=batch_size)
    return make_attribution(values, classes, scores, "guided backprop" if guided else "saliency")


def smoothgrad(model, x, *, classes=None, samples=50, noise=0.15, seed=0, batch_size=32):
    """SmoothGrad: the saliency averaged over noisy copies of each image.

    Args:
        model, x, classes, batch_size: as for `saliency`.
        samples: noisy copies per image.
        noise: the noise's standard deviation, as a fraction of each image's value range.
        seed: seeds the noise.

    Returns:
        An `Attribution` (scores are those of the clean images).
    """
    x, scores, classes = _clean_pass(model, x, classes, batch_size)
    rng = np.random.default_rng(seed)
    spread = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    noisy = np.repeat(x, samples, axis=0) + rng.normal(size=(len(x) * samples,) + x.shape[1:]) \
        * np.repeat(spread, samples)[:, None, None, None]
    values, _, _ = class_gradients(model, noisy.astype(np.float32), np.repeat(classes, samples),
                                   batch_size=batch_size)
    values = values.reshape((len(x), samples) + x.shape[1:]).mean(axis=1)
    return make_attribution(values, classes, scores, "smoothgrad")


def integrated_gradients(model, x, *, classes=None, baseline=None, steps=128, batch_size=32):
    """Integrated Gradients: (x - baseline) times the mean gradient along the straight path.

    The attributions of an image sum to score(x) - score(baseline), up to the error of the
    midpoint rule over `steps` points (completeness).

    Args:
        model, x, classes, batch_size: as for `saliency`.
        baseline: float32 (H, W, C) or (N, H, W, C) in model-input space; default a black
            image through the model's preprocessing.
        steps: points along the path.

    Returns:
        An `Attribution`.
    """
    x, scores, classes = _clean_pass(model, x, classes, batch_size)
    if baseline is None:
        baseline = preprocessing_for(model)(np.zeros(x.shape[1:], np.float32))
    baseline = np.broadcast_to(np.asarray(baseline, np.float32), x.shape)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)[None, :, None, None, None]
    path = baseline[:, None] + alphas * (x - baseline)[:, None]
    gradients, _, _ = class_gradients(model, path.reshape((-1,) + x.shape[1:]),
                                      np.repeat(classes, steps), batch_size=batch_size)
    mean_gradient = gradients.reshape((len(x), steps) + x.shape[1:]).mean(axis=1)
    return make_attribution((x - baseline) * mean_gradient, classes, scores,
                            "integrated gradients")


def class_scores(model, x, classes, *, batch_size=32):
    """Pre-softmax scores of `classes` (one per image) on images x: float32 (N,)."""
    return _clean_pass(model, x, classes, batch_size)[1]


def _clean_pass(model, x, classes, batch_size):
    """(checked x, class scores, classes) on the images themselves."""
    x = check_input(model, x)
    _, scores, classes = class_gradients(model, x, class_indices(model, classes, len(x)),
                                         batch_size=batch_size)
    return x, scores, classes


def make_attribution(values, classes, scores, method):
    """An `Attribution` from signed values (N, H, W, C), with display maps computed."""
    if not np.all(np.isfinite(values)):
        raise KvisError(f"{method}: the gradients are not finite")
    magnitude = np.abs(values).max(axis=-1)
    peak = magnitude.max(axis=(1, 2), keepdims=True)
    maps = magnitude / np.where(peak > 0, peak, 1.0)
    return Attribution(values.astype(np.float32), maps.astype(np.float32), classes,
                       np.asarray(scores, np.float32), method)
