"""Where the model looks: every class-attention method behind one function and one figure.

`attention(model, images, method)` dispatches to the method named in
`kvis.core.vocabulary.ATTENTION_METHODS` (the registry `METHODS` maps each name to its
function) and returns an `Explanation` whose `maps` (N, H, W) lie in [0, 1] at the input size
whichever the method: the CAM family (`kvis.attribution.cam`), the gradient family
(`kvis.attribution.gradients`) or occlusion (`kvis.attribution.occlusion`).
"""

import inspect

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize

from kvis.attribution import cam, gradients, occlusion
from kvis.attribution.cam import upsample
from kvis.attribution.explanation import unit_maps
from kvis.core.errors import KvisError
from kvis.core.vocabulary import ATTENTION_METHODS, SIGNS
from kvis.plot.figures import WIDEST, NotebookFigure, fit_texts, show_image

METHODS = {
    "grad-cam": cam.grad_cam,
    "grad-cam++": cam.grad_cam_plus_plus,
    "score-cam": cam.score_cam,
    "guided-grad-cam": cam.guided_grad_cam,
    "saliency": gradients.saliency,
    "guided-backprop": gradients.guided_backprop,
    "smoothgrad": gradients.smoothgrad,
    "integrated-gradients": gradients.integrated_gradients,
    "occlusion": occlusion.occlusion_map,
}
# sign="all": blue (negative), white (0), red (positive); an odd count of colours puts white
# exactly at the centre, so v and -v get mirrored colours.
DIVERGING = colormaps["bwr"].resampled(255)
_SIGN_LABELS = {"absolute": "absolute value", "positive": "positive part",
                "negative": "negative part", "all": "signed"}


def attention(model, images, method="grad-cam", *, classes=None, score="logit", target=None,
              layer=None, batch_size=32, memory_mb=1024, progress=True, **method_options):
    """Explain the class scores of images with the named method.

    Args:
        model: a Keras classifier.
        images: what `kvis.load_image` returns (one or a list), or preprocessed float32
            (N, H, W, C) model input.
        method: one of `kvis.core.vocabulary.ATTENTION_METHODS`: "grad-cam", "grad-cam++",
            "score-cam", "guided-grad-cam" (the layer's family), "saliency", "guided-backprop",
            "smoothgrad", "integrated-gradients" (pixel gradients) or "occlusion" (score drops
            under a sliding square).
        classes: None (each image's top prediction), one class (index or name) for all, or
            one per image.
        score: "logit" (pre-softmax) or "probability".
        target: instead of a class, a channel or a neuron (`kvis.objectives.channel(layer,
            c)`, `neuron(...)`) or a callable on the model's output giving (N,).
        layer: the spatial layer of the CAM methods (default: the last one, also inside a
            nested base model); the gradient methods take none.
        batch_size: images per compiled pass.
        memory_mb: the budget of one pass (its images and activations).
        progress: show progress.
        **method_options: the method's own options, e.g. `samples=`, `noise=`, `seed=` for
            SmoothGrad, `baseline=`, `steps=` for Integrated Gradients, `upsampling=` for the
            CAMs.

    Returns:
        An `Explanation` with `maps` (N, H, W) in [0, 1], `classes` and `method`.

    Raises:
        KvisError: an unknown method, an option or a layer the method does not take, and what
            the method raises.

    Example:
        >>> result = kvis.attention(model, kvis.load_image("boot.png", model), "score-cam",
        ...                         score="probability")
    """
    if method not in METHODS:
        raise KvisError(f"unknown attention method {method!r}; choose from "
                        f"{', '.join(ATTENTION_METHODS)}")
    function = METHODS[method]
    takes = inspect.signature(function).parameters
    if layer is not None:
        if "layer" not in takes:
            raise KvisError(f"{method} attributes to the input pixels and takes no layer; the "
                            f"layer is for {', '.join(m for m in METHODS if takes_layer(m))}")
        method_options["layer"] = layer
    if unknown := [name for name in method_options if name not in takes]:
        options = [name for name in takes
                   if name not in ("model", "images", "classes", "score", "target",
                                   "batch_size", "memory_mb", "progress")]
        raise KvisError(f"{method} has no option {unknown[0]!r}; its options: "
                        f"{', '.join(options) or 'none'}")
    return function(model, images, classes=classes, score=score, target=target,
                    batch_size=batch_size, memory_mb=memory_mb, progress=progress,
                    **method_options)


def overlay(pixels, heatmap, *, alpha=0.4, colormap=cv2.COLORMAP_JET):
    """An image blended with a colour-mapped heatmap.

    Args:
        pixels: uint8 (H, W, C), C 1 (grayscale) or 3 (RGB).
        heatmap: float (h, w) in [0, 1] (clipped); resized to (H, W) (bilinear) if needed.
        alpha: weight of the heatmap colours, in [0, 1].
        colormap: an OpenCV colormap, e.g. `cv2.COLORMAP_JET` (the heatmap in 256 levels), or
            a matplotlib `Colormap` (looked up as `colormap(heatmap)`).

    Returns:
        uint8 (H, W, 3) RGB: (1 - alpha) * image + alpha * colormap(heatmap), rounded.

    Raises:
        KvisError: pixels that are not uint8 (H, W, 1 or 3), or a heatmap that is not 2-D.
    """
    pixels, heatmap = np.asarray(pixels), np.asarray(heatmap, np.float32)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
        raise KvisError(f"overlay needs uint8 pixels (H, W, 1 or 3); got {pixels.dtype} "
                        f"{pixels.shape}")
    if heatmap.ndim != 2:
        raise KvisError(f"a heatmap must be (H, W); got shape {heatmap.shape}")
    heatmap = np.clip(upsample(heatmap, pixels.shape[:2]), 0.0, 1.0)
    if isinstance(colormap, Colormap):
        colours = colormap(heatmap)[..., :3] * 255.0
    else:
        levels = np.round(heatmap * 255).astype(np.uint8)
        colours = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)
    image = np.broadcast_to(pixels, (*pixels.shape[:2], 3)).astype(np.float64)
    blend = (1.0 - alpha) * image + alpha * colours.astype(np.float64)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def plot_attention(result, *, fig=None, title=None, alpha=0.4, tile_inches=2.2, sign=None):
    """Each image beside its attention map overlaid (JET), with a colour bar for the map.

    The image tiles are titled with the image names, the overlays with the class explained
    (its name where known) and its score; the figure title names the method and, for the CAM
    family, the layer ("boot.png: grad-cam at block3_conv1" for one image). Several results
    (methods) of the same images are drawn side by side: one row per image, the image and then
    one column per method.

    Args:
        result: an `Explanation` (from `attention` or any method); nothing else is needed. Or
            a list of them, for the same images.
        fig: a Figure or SubFigure to draw in; by default a new Figure.
        title: the figure's title (default as above).
        alpha: weight of the heatmap colours in the overlays.
        tile_inches: the size of each tile at most: they shrink to fit `WIDEST`.
        sign: None (each method's own `maps`), or which sign of the attributions to show,
            "absolute", "positive", "negative" or "all" (a diverging map, 0 white): see
            `sign_maps`.

    Returns:
        The Figure (or SubFigure) drawn in.

    Raises:
        KvisError: an unknown sign, or results of different images.

    Example:
        >>> kvis.plot_attention(kvis.attention(model, image, "grad-cam"))
        >>> kvis.plot_attention([kvis.attention(model, image, m) for m in ("grad-cam",
        ...                      "integrated-gradients")], sign="all")
    """
    if isinstance(result, (list, tuple)) and len(result) > 1:
        return _plot_methods(result, fig=fig, title=title, alpha=alpha, tile_inches=tile_inches,
                             sign=sign)
    if isinstance(result, (list, tuple)):
        result = result[0]
    maps = sign_maps(result, sign)
    count = len(result.maps)
    pairs = min(count, 3)
    rows = -(-count // pairs)
    tile_inches = min(tile_inches, (WIDEST - 0.9) / (2 * pairs))
    if fig is None:
        fig = NotebookFigure(figsize=(2 * pairs * tile_inches + 0.9, rows * tile_inches + 0.7),
                             layout="constrained")
    axes = fig.subplots(rows, 2 * pairs, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i in range(count):
        pixels = result.pixels[i]
        show_image(axes[2 * i], pixels)
        axes[2 * i].set_title(result.names[i], fontsize=8)
        axes[2 * i + 1].imshow(_overlaid(pixels, maps[i], sign, alpha), interpolation="nearest")
        axes[2 * i + 1].set_title(scored_label(result, i), fontsize=8)
    _colour_bar(fig, axes, f"{result.method} map", sign)
    fig.suptitle(title or _title(result))
    return fit_texts(fig)


def sign_maps(result, sign=None):
    """The maps `plot_attention` colours: float32 (N, H, W), one per image.

    The sign modes follow Captum's `visualize_image_attr(..., sign=)` ("absolute_value",
    "positive", "negative", "all") on the signed attribution a (N, H, W): the gradient methods,
    Guided Grad-CAM and occlusion sum their `values` over the channels, as Captum does; the
    CAMs upsample their `raw` map (bilinear) to the input size. Each image's map is then
    divided by its largest |value| (Captum's `outlier_perc=0`; Captum clips the top 2% by
    default). kvis's own maps (sign=None) differ: the gradient methods take the largest
    |value| over the channels, not the sum; pass sign="absolute" for Captum's.

    Args:
        result: an `Explanation`.
        sign: None: `result.maps`, in [0, 1]. "absolute": |a|, "positive": max(a, 0),
            "negative": max(-a, 0) (the size of the negative attributions, as Captum), each
            in [0, 1]. "all": a itself, in [-1, 1].

    Raises:
        KvisError: a sign not in `kvis.core.vocabulary.SIGNS`.
    """
    if sign is None:
        return result.maps
    if sign not in SIGNS:
        raise KvisError(f"unknown sign {sign!r}; choose from {', '.join(SIGNS)} (or None)")
    if result.values is not None:
        signed = result.values.sum(axis=-1)
    else:
        signed = np.stack([upsample(raw, result.maps.shape[1:]) for raw in result.raw])
    if sign == "all":
        peaks = np.abs(signed).max(axis=(1, 2), keepdims=True)
        return np.divide(signed, peaks, out=np.zeros_like(signed), where=peaks > 0)
    part = {"absolute": np.abs(signed), "positive": np.maximum(signed, 0),
            "negative": np.maximum(-signed, 0)}[sign]
    return unit_maps(part)


def _plot_methods(results, *, fig, title, alpha, tile_inches, sign):
    """Several methods' results of the same images: a row per image, a column per method."""
    first = results[0]
    if any(r.names != first.names or not np.array_equal(r.pixels, first.pixels)
           for r in results):
        raise KvisError("plot_attention draws several methods side by side for the same "
                        "images; these results explain different images")
    if fig is None:
        fig = NotebookFigure(figsize=((len(results) + 1) * tile_inches + 0.9,
                                      len(first) * tile_inches + 0.7), layout="constrained")
    axes = fig.subplots(len(first), len(results) + 1, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for column, result in enumerate(results, 1):
        maps = sign_maps(result, sign)
        where = f" at {result.layer}" if result.layer else ""
        axes[0, column].set_title(f"{result.method}{where}", fontsize=8)
        for i, pixels in enumerate(result.pixels):
            axes[i, column].imshow(_overlaid(pixels, maps[i], sign, alpha),
                                   interpolation="nearest")
    for i, pixels in enumerate(first.pixels):
        show_image(axes[i, 0], pixels)
        axes[i, 0].set_title(f"{first.names[i]}\n{scored_label(first, i)}", fontsize=8)
    _colour_bar(fig, axes.ravel(), "map", sign)
    methods = ", ".join(result.method for result in results)
    one = f"{first.names[0]}: {methods} for {first.class_labels[0]}"
    fig.suptitle(title or (one if len(first) == 1 else methods))
    return fig


def _overlaid(pixels, heatmap, sign, alpha):
    """An overlay of one map from `sign_maps`: JET in [0, 1], or diverging in [-1, 1]."""
    if sign == "all":
        return overlay(pixels, (heatmap + 1.0) / 2.0, alpha=alpha, colormap=DIVERGING)
    return overlay(pixels, heatmap, alpha=alpha)


def _colour_bar(fig, axes, label, sign):
    colours = (ScalarMappable(Normalize(-1.0, 1.0), cmap=DIVERGING) if sign == "all"
               else ScalarMappable(Normalize(0.0, 1.0), cmap="jet"))
    fig.colorbar(colours, ax=list(axes), shrink=0.8,
                 label=label if sign is None else f"{label}, {_SIGN_LABELS[sign]}")


def scored_label(result, i):
    """What image i's map explains, with its value: 'bag (logit 7.210)', or
    'channel(block3_conv1, 5) = 0.118' for a target that is not a class."""
    if result.classes is None:
        return f"{result.class_labels[i]} = {result.scores[i]:.3f}"
    return f"{result.class_labels[i]} ({result.score} {result.scores[i]:.3f})"


def _title(result):
    where = f" at {result.layer}" if result.layer else ""
    if len(result.maps) == 1:
        return f"{result.names[0]}: {result.method}{where} for {result.class_labels[0]}"
    return f"{result.method}{where}"


def takes_layer(method):
    """Whether the attention method explains at a layer (the CAM family, Guided Grad-CAM)."""
    return "layer" in inspect.signature(METHODS[method]).parameters
