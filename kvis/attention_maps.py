"""Where the model looks: every class-attention method behind one function.

`attention(model, x, method)` returns maps (N, H, W) in [0, 1] at the input size, whichever
the method: the CAM family (`kvis.cam`), the gradient family (`kvis.attribution`), or Guided
Grad-CAM (Selvaraju et al. 2017), guided backpropagation weighted by the upsampled Grad-CAM.
"""

import cv2
import numpy as np

from kvis import attribution, cam
from kvis.cam import upsample
from kvis.errors import KvisError
from kvis.plot import image_grid

METHODS = ("gradcam", "gradcam++", "scorecam", "guided-gradcam", "saliency",
           "guided-backprop", "smoothgrad", "ig")


def attention(model, x, method="gradcam", *, classes=None, layer=None, batch_size=32):
    """Explain the class scores of images with the named method.

    Args:
        model: a Keras classifier.
        x: float32 (N, H, W, C), preprocessed model input.
        method: one of `METHODS`.
        classes: None (each image's top prediction), one class (index or name) for all, or
            one per image.
        layer: the conv layer of the CAM methods (default: the last spatial layer, also
            inside a nested base model); the gradient methods ignore it.
        batch_size: images per compiled pass.

    Returns:
        A `kvis.cam.AttentionMap` or a `kvis.attribution.Attribution`; both have `maps`
        (N, H, W) in [0, 1], `classes` and `method`.
    """
    if method not in METHODS:
        raise KvisError(f"unknown attention method {method!r}; choose from {', '.join(METHODS)}")
    options = dict(classes=classes, batch_size=batch_size)
    if method in ("gradcam", "gradcam++", "scorecam"):
        function = {"gradcam": cam.grad_cam, "gradcam++": cam.grad_cam_plus_plus,
                    "scorecam": cam.score_cam}[method]
        return function(model, x, layer=layer, **options)
    if method == "guided-gradcam":
        return guided_grad_cam(model, x, layer=layer, **options)
    if method == "smoothgrad":
        return attribution.smoothgrad(model, x, **options)
    if method == "ig":
        return attribution.integrated_gradients(model, x, **options)
    return attribution.saliency(model, x, guided=method == "guided-backprop", **options)


def guided_grad_cam(model, x, *, classes=None, layer=None, batch_size=32):
    """Guided backpropagation times the Grad-CAM map: fine detail, class-discriminative.

    Returns:
        A `kvis.attribution.Attribution` whose values are the guided gradients weighted by
        the Grad-CAM map at each pixel.
    """
    coarse = cam.grad_cam(model, x, classes=classes, layer=layer, batch_size=batch_size)
    fine = attribution.saliency(model, x, classes=coarse.classes, guided=True,
                             batch_size=batch_size)
    return attribution.make_attribution(fine.values * coarse.maps[..., None], coarse.classes,
                                fine.scores, "guided grad-cam")


def overlay(pixels, heatmap, *, alpha=0.4, colormap=cv2.COLORMAP_JET):
    """An image blended with a colour-mapped heatmap.

    Args:
        pixels: uint8 (H, W, C), C 1 (grayscale) or 3 (RGB).
        heatmap: float (h, w) in [0, 1] (clipped); resized to (H, W) (bilinear) if needed.
        alpha: weight of the heatmap colours, in [0, 1].
        colormap: an OpenCV colormap, e.g. `cv2.COLORMAP_JET`.

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
    heatmap = upsample(heatmap, pixels.shape[:2])
    levels = np.round(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)
    image = np.broadcast_to(pixels, (*pixels.shape[:2], 3)).astype(np.float64)
    blend = (1.0 - alpha) * image + alpha * colours.astype(np.float64)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def plot_attention(pixels, result, *, class_names=None, title=None):
    """Each image beside its attention map overlaid, titled "<method> #c name".

    Args:
        pixels: uint8 (N, H, W, C) or, for one image, (H, W, C); C 1 or 3.
        result: the `attention` result for those N images.
        class_names: names indexed by class, for the tile titles.
        title: the figure's title (default: the method, and the layer of a CAM).

    Returns:
        A Figure.

    Raises:
        KvisError: the number of images and of maps differ.
    """
    pixels = np.asarray(pixels)
    pixels = pixels[None] if pixels.ndim == 3 else pixels
    if len(pixels) != len(result.maps):
        raise KvisError(f"{len(pixels)} images for {len(result.maps)} attention maps")
    tiles, labels = [], []
    for image, heatmap, c in zip(pixels, result.maps, result.classes):
        tiles += [_rgb(image) / 255.0, overlay(image, heatmap) / 255.0]
        labels += ["image", f"{result.method} #{c}" + (f" {class_names[c]}" if class_names else "")]
    layer = getattr(result, "layer", None)
    return image_grid(tiles, titles=labels, cols=2 * min(len(pixels), 3), tile_inches=2.2,
                      title=title or result.method + (f" at {layer}" if layer else ""))


def method_functions(methods, *, classes=None, layer=None, batch_size=32):
    """`{name: f(model, x) -> maps}` for `kvis.sanity.cascading_randomization`.

    Pass the classes resolved on the intact model (`kvis.models.resolve_classes`), so the
    randomized models are asked about the same classes.
    """
    return {name: _maps_of(name, classes, layer, batch_size) for name in methods}


def _maps_of(method, classes, layer, batch_size):
    return lambda model, x: attention(model, x, method, classes=classes, layer=layer,
                                      batch_size=batch_size).maps


def _rgb(pixels):
    return np.broadcast_to(pixels, (*pixels.shape[:2], 3))
