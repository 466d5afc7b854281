"""The gradient family: vanilla saliency (Simonyan et al. 2013), guided backpropagation
(Springenberg et al. 2015), SmoothGrad (Smilkov et al. 2017) and Integrated Gradients
(Sundararajan et al. 2017).

Each explains a target (`kvis.core.targets`): a class's logit by default (a final softmax is
bypassed, the model unchanged), its probability with `score="probability"`, or a channel, a
neuron or a callable with `target=`. They run through the one score pass with a backward rule
at every ReLU; SmoothGrad's noisy copies and the Integrated Gradients path are made a batch
at a time inside `memory_mb`, so memory does not grow with `samples` or `steps`.
"""

import dataclasses

import numpy as np

from kvis.attribution.explanation import make_explanation
from kvis.core.errors import KvisError
from kvis.core.images import as_images
from kvis.core.models import preprocessing_for
from kvis.core.runner import rows_within, run_batches, stream_batches
from kvis.core.targets import input_gradients, make_target, score_pass


def saliency(model, images, *, classes=None, score="logit", target=None, batch_size=32,
             memory_mb=1024, progress=True):
    """Vanilla gradient saliency: d score / d input (Simonyan et al. 2013).

    Args:
        model: a Keras classifier.
        images: what `kvis.load_image` returns (one or a list), or preprocessed float32
            (N, H, W, C) model input.
        classes: None (each image's top prediction), one class (index or name) for all,
            or one per image.
        score: "logit" (pre-softmax, the paper's and Captum's usual target) or "probability".
        target: instead of a class, a channel or a neuron (`kvis.objectives.channel(layer,
            c)`, `neuron(...)`) or a callable on the model's output giving (N,).
        batch_size: images per compiled pass.
        memory_mb: the budget of one pass (its images and activations); the batch shrinks
            to fit.
        progress: show progress.

    Returns:
        An `Explanation` with method "saliency"; `values` are the gradients.

    Raises:
        KvisError: images that do not fit the model, an unknown class or score, both
            classes and a target.

    Example:
        >>> result = kvis.saliency(model, kvis.load_image("boot.png", model), score="probability")
    """
    return _gradients(model, images, "saliency", "gradient", classes=classes, score=score,
                      target=target, batch_size=batch_size, memory_mb=memory_mb,
                      progress=progress)


def guided_backprop(model, images, *, classes=None, score="logit", target=None, batch_size=32,
                    memory_mb=1024, progress=True):
    """Guided backpropagation (Springenberg et al. 2015): the gradient with only positive
    signal passed back through the ReLUs that were active.

    Args, Raises: as for `saliency`.

    Returns:
        An `Explanation` with method "guided-backprop".
    """
    return _gradients(model, images, "guided-backprop", "guided", classes=classes, score=score,
                      target=target, batch_size=batch_size, memory_mb=memory_mb,
                      progress=progress)


def smoothgrad(model, images, *, classes=None, score="logit", target=None, samples=50,
               noise=0.15, seed=0, batch_size=32, memory_mb=1024, progress=True):
    """SmoothGrad (Smilkov et al. 2017): the saliency averaged over noisy copies of each image.

    The noise is Gaussian in model-input space, its standard deviation `noise` times the
    image's value range (max - min), the paper's convention.

    Args:
        model, images, classes, score, target, memory_mb, progress: as for `saliency`;
            the noisy copies are made a batch at a time.
        batch_size: images per pass, each with all its noisy copies, as many rows as
            `memory_mb` allows.
        samples: noisy copies per image.
        noise: the noise's standard deviation as a fraction of each image's value range.
        seed: seeds the noise.

    Returns:
        An `Explanation` with method "smoothgrad" (scores are those of the clean images).
    """
    batch, target, clean = _clean_pass(model, images, "smoothgrad", classes=classes,
                                       score=score, target=target, batch_size=batch_size,
                                       memory_mb=memory_mb)
    x = batch.x
    rng = np.random.default_rng(seed)
    spread = (noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))).astype(np.float32)

    def noisy(rows):
        images = np.arange(rows.start, rows.stop) // samples
        noise = rng.standard_normal((len(images),) + x.shape[1:], dtype=np.float32)
        noise *= spread[images][:, None, None, None]
        return noise + x[images], *target.rows(images)

    values = _mean_gradient(model, target, len(x), samples, noisy, "smoothgrad", batch_size,
                            memory_mb, progress)
    return make_explanation(model, batch, "smoothgrad", target, clean, values=values)


def integrated_gradients(model, images, *, classes=None, score="logit", target=None, baseline=0,
                         steps=128, batch_size=32, memory_mb=1024, progress=True):
    """Integrated Gradients (Sundararajan et al. 2017): (x - baseline) times the mean gradient
    along the straight path from the baseline to x.

    The attributions of an image sum to score(x) - score(baseline), up to the error of the
    midpoint rule over `steps` points (completeness). As in Captum, the path is in model-input
    space; the baseline is given in pixels and converted with the model's preprocessing
    (`kvis.preprocessing_for`), so the default, 0, is a black image whatever the model expects.

    Args:
        model, images, classes, score, target, memory_mb, progress: as for `saliency`;
            the path's points are made a batch at a time.
        batch_size: images per pass, each with all its points, as many rows as `memory_mb`
            allows.
        baseline: pixels in [0, 255]: a number (every pixel), (H, W, C) for every image, or
            (N, H, W, C) one per image. Captum's default, a zero *input*, is the baseline
            `preprocessing_for(model).invert(0)` where that lies in [0, 255].
        steps: points along the path (midpoint rule).

    Returns:
        An `Explanation` with method "integrated-gradients" and its convergence `delta` (N,),
        as Captum's `return_convergence_delta=True` gives it.

    Raises:
        KvisError: as for `saliency`; a baseline outside [0, 255] or of the wrong shape; a
            model whose preprocessing kvis cannot tell.

    Example:
        >>> kvis.integrated_gradients(model, image, baseline=kvis.mean_pixel(model))
    """
    batch, target, clean = _clean_pass(model, images, "integrated-gradients", classes=classes,
                                       score=score, target=target, batch_size=batch_size,
                                       memory_mb=memory_mb)
    x = batch.x
    origin = _baseline(model, baseline, x.shape)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)

    def path(rows):
        images, points = np.divmod(np.arange(rows.start, rows.stop), steps)
        along = origin[images] + alphas[points][:, None, None, None] * (x - origin)[images]
        return along.astype(np.float32), *target.rows(images)

    mean_gradient = _mean_gradient(model, target, len(x), steps, path, "integrated-gradients",
                                   batch_size, memory_mb, progress)
    values = (x - origin) * mean_gradient
    start = run_batches(score_pass(model, target), (origin, *target.rows(np.arange(len(x)))),
                        batch_size=rows_within(model, memory_mb, batch_size=batch_size),
                        progress=False)["scores"]
    delta = values.sum(axis=(1, 2, 3), dtype=np.float64) - (clean["scores"] - start)
    return dataclasses.replace(
        make_explanation(model, batch, "integrated-gradients", target, clean, values=values),
        delta=delta.astype(np.float32))


def scores_of(model, images, classes, *, score="logit", batch_size=32):
    """The score of one class per image: float32 (N,) (the "f(x)" of completeness checks).

    Args:
        model: a Keras classifier.
        images: as for `saliency`.
        classes: as for `saliency`.
        score: "logit" or "probability".
    """
    return _clean_pass(model, images, "scores", classes=classes, score=score, target=None,
                       batch_size=batch_size, memory_mb=1024)[2]["scores"]


def _gradients(model, images, method, rule, *, classes, score, target, batch_size, memory_mb,
               progress):
    batch = as_images(model, images)
    target = make_target(model, len(batch.x), classes=classes, score=score, target=target,
                         purpose=method)
    outputs = input_gradients(model, batch.x, target, rule=rule, batch_size=batch_size,
                              memory_mb=memory_mb, desc=method, progress=progress)
    return make_explanation(model, batch, method, target, outputs, values=outputs["gradient"])


def _clean_pass(model, images, method, *, classes, score, target, batch_size, memory_mb):
    """(images, the target with each image's class fixed, the score pass's outputs on the
    images themselves)."""
    batch = as_images(model, images)
    target = make_target(model, len(batch.x), classes=classes, score=score, target=target,
                         purpose=method)
    outputs = run_batches(score_pass(model, target),
                          (batch.x, *target.rows(np.arange(len(batch.x)))),
                          batch_size=rows_within(model, memory_mb, batch_size=batch_size),
                          progress=False)
    if target.is_class:
        target = dataclasses.replace(target, classes=outputs["classes"])
    return batch, target, outputs


def _mean_gradient(model, target, count, per_image, make, method, batch_size, memory_mb,
                   progress):
    """The mean input gradient over `per_image` rows of each of `count` images, the rows made
    a batch at a time by `make(rows)`, `batch_size` images' rows to a pass where `memory_mb`
    allows (larger passes run faster): float32 (count, H, W, C)."""
    step = score_pass(model, target, gradient="input", rule="gradient")
    total = None
    for rows, outputs in stream_batches(
            step, count * per_image, make, desc=method, progress=progress,
            batch_size=rows_within(model, memory_mb, batch_size=batch_size * per_image)):
        gradient = outputs["gradient"].astype(np.float64)
        if total is None:
            total = np.zeros((count,) + gradient.shape[1:])
        images = np.arange(rows.start, rows.stop) // per_image
        starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
        total[images[starts]] += np.add.reduceat(gradient, starts, axis=0)
    return (total / per_image).astype(np.float32)


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
