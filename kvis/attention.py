"""Where the model looks: every class-attention method behind one function.

`attention(model, x, method)` returns maps (N, H, W) in [0, 1] at the input size, whichever
the method: the CAM family (`kvis.cam`), the gradient family (`kvis.saliency`), or Guided
Grad-CAM (Selvaraju et al. 2017), guided backpropagation weighted by the upsampled Grad-CAM.
"""

from kvis import cam, saliency
from kvis.errors import KvisError

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
        A `kvis.cam.AttentionMap` or a `kvis.saliency.Attribution`; both have `maps`
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
        return saliency.smoothgrad(model, x, **options)
    if method == "ig":
        return saliency.integrated_gradients(model, x, **options)
    return saliency.saliency(model, x, guided=method == "guided-backprop", **options)


def guided_grad_cam(model, x, *, classes=None, layer=None, batch_size=32):
    """Guided backpropagation times the Grad-CAM map: fine detail, class-discriminative.

    Returns:
        A `kvis.saliency.Attribution` whose values are the guided gradients weighted by
        the Grad-CAM map at each pixel.
    """
    coarse = cam.grad_cam(model, x, classes=classes, layer=layer, batch_size=batch_size)
    fine = saliency.saliency(model, x, classes=coarse.classes, guided=True,
                             batch_size=batch_size)
    return saliency.attribution(fine.values * coarse.maps[..., None], coarse.classes,
                                fine.scores, "guided grad-cam")


def method_functions(methods, *, classes=None, layer=None, batch_size=32):
    """`{name: f(model, x) -> maps}` for `kvis.sanity.cascading_randomization`.

    Pass the classes resolved on the intact model (`kvis.models.resolve_classes`), so the
    randomized models are asked about the same classes.
    """
    return {name: _maps_of(name, classes, layer, batch_size) for name in methods}


def _maps_of(method, classes, layer, batch_size):
    return lambda model, x: attention(model, x, method, classes=classes, layer=layer,
                                      batch_size=batch_size).maps
