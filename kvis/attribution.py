"""Class explanations and the gradient family: vanilla saliency (Simonyan et al. 2013), guided
backpropagation (Springenberg et al. 2015), SmoothGrad (Smilkov et al. 2017) and Integrated
Gradients (Sundararajan et al. 2017).

`Explanation` is the one result of every class explanation, the CAM family (`kvis.cam`)
included. The gradient methods explain the class logit by default (a final softmax is
bypassed, the model unchanged) or, with `score="probability"`, the softmax probability; they
run through `kvis.backprop.class_gradients`, so N noisy copies or N interpolation steps cost
N / batch_size compiled passes and the top class is found in the same pass.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from kvis.anatomy import check_score, require_classifier
from kvis.backprop import class_gradients
from kvis.errors import KvisError
from kvis.images import as_images
from kvis.models import class_indices, class_label, preprocessing_for


@dataclass(frozen=True)
class Explanation:
    """Where the evidence for a class lies in each image: the result of every attention method.

    Attributes:
        method: the method's name, one of `kvis.ATTENTION_METHODS` ("grad-cam", "saliency", ...).
        maps: float32 (N, H, W) in [0, 1] at the input size, for display. CAMs: the raw map with
            negative values set to zero, upsampled and divided by its maximum. Gradient methods:
            the largest |value| over channels divided by its maximum. All zero where nothing is
            positive.
        values: float32 (N, H, W, C) signed attributions in model-input space (gradient methods
            and Guided Grad-CAM), or None for the CAMs.
        raw: float32 (N, h, w) sum_k w_k A_k at the layer's resolution before any ReLU or
            normalization (CAMs and Guided Grad-CAM), or None.
        layer: the path of the explained layer (CAMs and Guided Grad-CAM), or None.
        classes: int64 (N,) the class explained for each image.
        class_labels: the class of each image as shown: its name where known, else "#c".
        scores: float32 (N,) the explained score of each image's class on the image itself.
        score: what was explained: "logit" or "probability".
        pixels: uint8 (N, H, W, C) in [0, 255], the images, for display.
        names: a name per image.
    """

    method: str
    maps: np.ndarray
    values: np.ndarray | None
    raw: np.ndarray | None
    layer: str | None
    classes: np.ndarray
    class_labels: list
    scores: np.ndarray
    score: str
    pixels: np.ndarray
    names: list

    def __len__(self):
        return len(self.maps)

    def __getitem__(self, index):
        """The explanation of some images: `result[0]`, `result[1:3]`, `result[[0, 2]]`."""
        picked = np.arange(len(self))[index]
        picked = np.atleast_1d(picked)
        changes = {field.name: getattr(self, field.name)[picked]
                   for field in dataclasses.fields(self)
                   if isinstance(getattr(self, field.name), np.ndarray)}
        return dataclasses.replace(
            self, **changes, class_labels=[self.class_labels[i] for i in picked],
            names=[self.names[i] for i in picked])


def saliency(model, images, *, classes=None, score="logit", batch_size=32, progress=True):
    """Vanilla gradient saliency: d score / d input (Simonyan et al. 2013).

    Args:
        model: a Keras classifier.
        images: what `kvis.load_image` returns (one or a list), or preprocessed float32
            (N, H, W, C) model input.
        classes: None (each image's top prediction), one class (index or name) for all,
            or one per image.
        score: "logit" (pre-softmax, the paper's and Captum's usual target) or "probability".
        batch_size: images per compiled pass.
        progress: show progress.

    Returns:
        An `Explanation` with method "saliency"; `values` are the gradients.

    Raises:
        KvisError: images that do not fit the model, an unknown class or score.

    Example:
        >>> result = kvis.saliency(model, kvis.load_image("boot.png", model), score="probability")
    """
    return _gradients(model, images, "saliency", "gradient", classes, score, batch_size, progress)


def guided_backprop(model, images, *, classes=None, score="logit", batch_size=32,
                    progress=True):
    """Guided backpropagation (Springenberg et al. 2015): the gradient with only positive
    signal passed back through the ReLUs that were active.

    Args, Raises: as for `saliency`.

    Returns:
        An `Explanation` with method "guided-backprop".
    """
    return _gradients(model, images, "guided-backprop", "guided", classes, score, batch_size,
                      progress)


def smoothgrad(model, images, *, classes=None, score="logit", samples=50, noise=0.15, seed=0,
               batch_size=32, progress=True):
    """SmoothGrad (Smilkov et al. 2017): the saliency averaged over noisy copies of each image.

    The noise is Gaussian in model-input space, its standard deviation `noise` times the
    image's value range (max - min), the paper's convention.

    Args:
        model, images, classes, score, batch_size, progress: as for `saliency`.
        samples: noisy copies per image.
        noise: the noise's standard deviation as a fraction of each image's value range.
        seed: seeds the noise.

    Returns:
        An `Explanation` with method "smoothgrad" (scores are those of the clean images).
    """
    batch, scores, classes = _clean_pass(model, images, classes, score, batch_size, progress,
                                         "smoothgrad")
    x = batch.x
    rng = np.random.default_rng(seed)
    spread = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    noisy = np.repeat(x, samples, axis=0) + rng.normal(size=(len(x) * samples,) + x.shape[1:]) \
        * np.repeat(spread, samples)[:, None, None, None]
    values, _, _ = class_gradients(model, noisy.astype(np.float32), np.repeat(classes, samples),
                                   score=score, batch_size=batch_size, progress=progress,
                                   desc="smoothgrad")
    values = values.reshape((len(x), samples) + x.shape[1:]).mean(axis=1)
    return make_explanation(model, batch, "smoothgrad", classes=classes, scores=scores,
                            score=score, values=values)


def integrated_gradients(model, images, *, classes=None, score="logit", baseline=0, steps=128,
                         batch_size=32, progress=True):
    """Integrated Gradients (Sundararajan et al. 2017): (x - baseline) times the mean gradient
    along the straight path from the baseline to x.

    The attributions of an image sum to score(x) - score(baseline), up to the error of the
    midpoint rule over `steps` points (completeness). As in Captum, the path is in model-input
    space; the baseline is given in pixels and converted with the model's preprocessing
    (`kvis.preprocessing_for`), so the default, 0, is a black image whatever the model expects.

    Args:
        model, images, classes, score, batch_size, progress: as for `saliency`.
        baseline: pixels in [0, 255]: a number (every pixel), (H, W, C) for every image, or
            (N, H, W, C) one per image. Captum's default, a zero *input*, is the baseline
            `preprocessing_for(model).invert(0)` where that lies in [0, 255].
        steps: points along the path (midpoint rule).

    Returns:
        An `Explanation` with method "integrated-gradients".

    Raises:
        KvisError: as for `saliency`; a baseline outside [0, 255] or of the wrong shape; a
            model whose preprocessing kvis cannot tell.

    Example:
        >>> kvis.integrated_gradients(model, image, baseline=kvis.mean_pixel(model))
    """
    batch, scores, classes = _clean_pass(model, images, classes, score, batch_size, progress,
                                         "integrated-gradients")
    x = batch.x
    origin = _baseline(model, baseline, x.shape)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)[None, :, None, None, None]
    path = origin[:, None] + alphas * (x - origin)[:, None]
    gradients, _, _ = class_gradients(model, path.reshape((-1,) + x.shape[1:]),
                                      np.repeat(classes, steps), score=score,
                                      batch_size=batch_size, progress=progress,
                                      desc="integrated-gradients")
    mean_gradient = gradients.reshape((len(x), steps) + x.shape[1:]).mean(axis=1)
    return make_explanation(model, batch, "integrated-gradients", classes=classes,
                            scores=scores, score=score, values=(x - origin) * mean_gradient)


def scores_of(model, images, classes, *, score="logit", batch_size=32, progress=False):
    """The score of one class per image: float32 (N,) (the "f(x)" of completeness checks).

    Args:
        model: a Keras classifier.
        images: as for `saliency`.
        classes: as for `saliency`.
        score: "logit" or "probability".
    """
    return _clean_pass(model, images, classes, score, batch_size, progress, "scores")[1]


def make_explanation(model, batch, method, *, classes, scores, score, maps=None, values=None,
                     raw=None, layer=None):
    """An `Explanation` of `batch` (a `kvis.images.Images`); the maps of gradient `values`
    are computed when not given."""
    if values is not None:
        if not np.all(np.isfinite(values)):
            raise KvisError(f"{method}: the gradients are not finite")
        values = np.asarray(values, np.float32)
        if maps is None:
            maps = unit_maps(np.abs(values).max(axis=-1))
    classes = np.asarray(classes, np.int64)
    return Explanation(method, np.asarray(maps, np.float32), values,
                       None if raw is None else np.asarray(raw, np.float32), layer, classes,
                       [class_label(model, int(c)) for c in classes],
                       np.asarray(scores, np.float32), score, batch.pixels, list(batch.names))


def unit_maps(maps):
    """Each (H, W) map divided by its maximum (an all-zero map stays zero): float32 [0, 1]
    for non-negative maps."""
    maps = np.asarray(maps, np.float32)
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)


def _gradients(model, images, method, rule, classes, score, batch_size, progress):
    batch, wanted = explained_images(model, images, classes, score, method)
    values, scores, classes = class_gradients(model, batch.x, wanted, rule=rule, score=score,
                                              batch_size=batch_size, progress=progress,
                                              desc=method)
    return make_explanation(model, batch, method, classes=classes, scores=scores, score=score,
                            values=values)


def _clean_pass(model, images, classes, score, batch_size, progress, method):
    """(images, class scores, classes) on the images themselves."""
    batch, wanted = explained_images(model, images, classes, score, method)
    _, scores, classes = class_gradients(model, batch.x, wanted, score=score,
                                         batch_size=batch_size, progress=progress, desc=method)
    return batch, scores, classes


def explained_images(model, images, classes, score, method):
    """Checked inputs of a class explanation: (`kvis.images.Images`, int64 (N,) class per
    image, -1 for the image's top prediction)."""
    check_score(score)
    require_classifier(model, method)
    batch = as_images(model, images)
    return batch, class_indices(model, classes, len(batch.x))


def _baseline(model, baseline, shape):
    """The baseline in model input, float32 (N, H, W, C), from pixels in [0, 255]."""
    pixels = np.asarray(baseline, np.float32)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise KvisError(f"an integrated-gradients baseline is given in pixels, within [0, 255]; "
                        f"got values in [{pixels.min():g}, {pixels.max():g}]")
    try:
        pixels = np.broadcast_to(pixels, shape)
    except ValueError:
        raise KvisError(f"a baseline of shape {pixels.shape} does not fit images of shape "
                        f"{shape}: give a number, (H, W, C) or (N, H, W, C)") from None
    return preprocessing_for(model)(pixels)
