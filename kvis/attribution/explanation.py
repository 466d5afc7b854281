"""`Explanation`, the one result of every attention method (the gradient family, the CAM
family, occlusion), and what builds it."""

import dataclasses
from dataclasses import dataclass

import numpy as np

from kvis.core.errors import KvisError


@dataclass(frozen=True)
class Explanation:
    """Where the evidence for a class lies in each image: the result of every attention method.

    Attributes:
        method: the method's name, one of `kvis.core.vocabulary.ATTENTION_METHODS`
            ("grad-cam", "saliency", ...).
        maps: float32 (N, H, W) in [0, 1] at the input size, for display. CAMs: the raw map with
            negative values set to zero, upsampled and divided by its maximum. Gradient methods:
            the largest |value| over channels divided by its maximum. All zero where nothing is
            positive.
        values: float32 (N, H, W, C) signed attributions in model-input space (gradient methods
            and Guided Grad-CAM), or None for the CAMs.
        raw: float32 (N, h, w) sum_k w_k A_k at the layer's resolution before any ReLU or
            normalization (CAMs and Guided Grad-CAM), or None.
        layer: the path of the explained layer (CAMs and Guided Grad-CAM), or None.
        classes: int64 (N,) the class explained for each image, or None when the target is
            not a class (a channel, a neuron, a callable: see `kvis.core.targets`).
        class_labels: what each image's map explains as shown: the class name where known,
            "#c" where not, or the target's name.
        scores: float32 (N,) the explained score (the target's value) on each image itself.
        score: what was explained: "logit" or "probability" of a class, or "target".
        pixels: uint8 (N, H, W, C) in [0, 255], the images, for display.
        names: a name per image.
        delta: float32 (N,) Integrated Gradients' convergence delta, Captum's: the sum of each
            image's attributions minus (its score minus the baseline's score), 0 for an exact
            integral; None for the other methods.
    """

    method: str
    maps: np.ndarray
    values: np.ndarray | None
    raw: np.ndarray | None
    layer: str | None
    classes: np.ndarray | None
    class_labels: list
    scores: np.ndarray
    score: str
    pixels: np.ndarray
    names: list
    delta: np.ndarray | None = None

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


def make_explanation(model, batch, method, target, outputs, *, maps=None, values=None,
                     raw=None, layer=None):
    """An `Explanation` of `batch` (a `kvis.core.images.Images`) for `target` (a
    `kvis.core.targets.Target`), from a score pass's `outputs` ("scores", and "classes" for a
    class target); the maps of gradient `values` are computed when not given."""
    if values is not None:
        if not np.all(np.isfinite(values)):
            raise KvisError(f"{method}: the gradients are not finite")
        values = np.asarray(values, np.float32)
        if maps is None:
            maps = unit_maps(channel_peak(values))
    scores = np.asarray(outputs["scores"], np.float32)
    classes = outputs.get("classes")
    classes = None if classes is None else np.asarray(classes, np.int64)
    return Explanation(method, np.asarray(maps, np.float32), values,
                       None if raw is None else np.asarray(raw, np.float32), layer, classes,
                       target.labels(model, scores if classes is None else classes), scores,
                       target.score, batch.pixels, list(batch.names))


def channel_peak(values):
    """float32 (N, H, W): the largest |value| over the channels of (N, H, W, C) values. A
    maximum of channel slices: NumPy reduces a short last axis element by element, 15 times
    slower on 224 px RGB gradients."""
    values = np.asarray(values, np.float32)
    return np.maximum.reduce([np.abs(values[..., c]) for c in range(values.shape[-1])])


def unit_maps(maps):
    """Each (H, W) map divided by its maximum (an all-zero map stays zero): float32 [0, 1]
    for non-negative maps."""
    maps = np.asarray(maps, np.float32)
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)


