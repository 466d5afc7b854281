"""Network inversion (Mahendran & Vedaldi, "Understanding Deep Image Representations by
Inverting Them", CVPR 2015): what does a layer's representation alone say about an image?

From the representation phi0 of an image at a layer, find the image x minimizing
||phi(x) - phi0||^2 / ||phi0||^2 + lambda_alpha * ||x||_alpha^alpha + lambda_TV * TV_beta(x),
with the image centred on mid-gray, on the shared engine (`kvis.synthesis.render`). Inversions from
several layers run as one batch, one image per layer. The representations, the optimization
step and the scoring are passes compiled once per model, layers and shape, the targets fed as
tensors: inverting a second image from the same layers traces nothing.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.core.graph import model_graph, probe
from kvis.core.images import one_image
from kvis.core.models import preprocessing_for
from kvis.core.runner import compiled, run_batches
from kvis.plot.figures import image_grid
from kvis.synthesis import objectives
from kvis.synthesis.render import Settings, render


@dataclass(frozen=True)
class Inversion:
    """Reconstructions of one image from several layers.

    Attributes:
        pixels: uint8 (1, H, W, C) in [0, 255], the image as the model saw it.
        names: the image's name, in a one-element list.
        layers: the layer paths inverted.
        images: float32 (L, H, W, C) in [0, 1], one reconstruction per layer.
        errors: float32 (L,) normalized representation errors ||phi(x) - phi0||^2 / ||phi0||^2
            (Mahendran's measure; not comparable across layers).
        pixel_errors: float32 (L,) root-mean-square difference to the original, in [0, 1]
            pixel units: how much of the image each layer still holds.
    """

    pixels: np.ndarray
    names: list
    layers: list
    images: np.ndarray
    errors: np.ndarray
    pixel_errors: np.ndarray


def inversion_settings(**changes):
    """Settings for inversion: pixel parameterization, no random transforms, 400 steps.

    Jitter keeps the image from matching the fixed target exactly: with 1 px of jitter the
    demo model's block1_conv1 error stays near 0.16, without it it falls below 0.001.
    """
    return Settings(parameterization="pixel", steps=400, learning_rate=0.1, noise=0.2,
                    jitter=0, scale=0.0, rotate=0.0).replace(**changes)


def invert(model, images, layers, *, alpha=6.0, beta=2.0, alpha_weight=0.1, tv_weight=0.05,
           seed=0, settings=None, progress=True):
    """Reconstruct an image from its representation at each of `layers`.

    Args:
        model: a Keras model.
        images: one image: what `kvis.load_image` returns, or preprocessed float32 model
            input (1, H, W, C) (its pixels are then recovered through the model's
            preprocessing).
        layers: a layer path or a list of them, spatial or not (e.g. "block1_conv1", "fc1").
        alpha, alpha_weight: the alpha-norm regularizer (Mahendran: alpha = 6), on the image
            in [0, 1] centred on mid-gray, as a mean over pixels.
        beta, tv_weight: the total-variation regularizer (beta = 2), as a mean over pixels.
        seed: reconstruction i starts from the noise of seed `(seed, i)`.
        settings: engine `Settings` (default: `inversion_settings()`).
        progress: show progress.

    Returns:
        An `Inversion`; errors are measured on the final images, without jitter.

    Raises:
        KvisError: more than one image, or an unknown layer (the closest names are listed).

    Example:
        >>> result = kvis.invert(model, kvis.load_image("cat.jpg", model), ["block1_conv2"])
    """
    graph = model_graph(model)
    layers = [graph.node(layer).path for layer in ([layers] if isinstance(layers, str) else layers)]
    batch = one_image(model, images, "invert reconstructs")
    preprocess = preprocessing_for(model)
    targets = _representations(model, layers, batch.x)
    objective = (objectives.select([objectives.feature_match(layer, targets[layer])
                                    for layer in layers])
                 - alpha_weight * objectives.lp_norm(alpha)
                 - tv_weight * objectives.total_variation(beta))
    result = render(model, objective, seeds=[(seed, i) for i in range(len(layers))],
                    settings=settings or inversion_settings(), size=batch.pixels.shape[1:3],
                    labels=layers, progress=progress)
    reached = _representations(model, layers, preprocess(result.images * 255.0))
    errors = [_normalized_error(reached[layer][i], targets[layer][0])
              for i, layer in enumerate(layers)]
    original = batch.pixels[0].astype(np.float32) / 255.0
    pixel_errors = np.sqrt(np.mean((result.images - original) ** 2, axis=(1, 2, 3)))
    return Inversion(batch.pixels, list(batch.names), layers, result.images,
                     np.array(errors, np.float32), pixel_errors.astype(np.float32))


def plot_inversion(result, *, fig=None, title=None):
    """The original image, then its reconstruction from each layer with the error reached.

    Args:
        result: an `Inversion`.
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: figure title (default: names the image).

    Returns:
        A Figure.
    """
    tiles = [result.pixels[0] / 255.0] + list(result.images)
    labels = ["original"] + [
        f"{layer}\nerror {error:.2g}, rmse {pixels:.2g}"
        for layer, error, pixels in zip(result.layers, result.errors, result.pixel_errors)]
    return image_grid(tiles, titles=labels, cols=len(tiles), cmap="gray", vmin=0, vmax=1,
                      title=title or f"{result.names[0]} reconstructed from each layer",
                      tile_inches=1.8, fig=fig)


def _representations(model, layers, x):
    """`{layer: its output}` for model input x, by a pass compiled once per model and layers."""
    step = compiled(model, ("synthesis.representations", tuple(layers)),
                    lambda jit: _probe_pass(probe(model, layers), model.input_shape, jit))
    return run_batches(step, (np.asarray(x, np.float32),), progress=False)


def _probe_pass(sub, input_shape, jit):
    return tf.function(lambda x: sub(x, training=False),
                       input_signature=[tf.TensorSpec((None, *input_shape[1:]))],
                       jit_compile=jit)


def _normalized_error(reached, target):
    return float(np.sum((reached - target) ** 2) / max(np.sum(target ** 2), 1e-12))
