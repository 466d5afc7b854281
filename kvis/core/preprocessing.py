"""How a model expects its pixels: named affine maps from RGB pixels in [0, 255] to model input.

The presets follow `keras.applications.imagenet_utils.preprocess_input`: "caffe" (VGG16,
ResNet50: BGR, ImageNet mean subtracted), "tf" ([-1, 1]), "torch" ([0, 1], ImageNet mean and
standard deviation), and "unit" ([0, 1]); "none" feeds the pixels as they are (a model that
rescales inside itself).
"""

from dataclasses import dataclass

import numpy as np

from kvis.core.errors import KvisError


@dataclass(frozen=True)
class Preprocessing:
    """An affine map from pixels to model input: `((pixels[..., order] / scale) - mean) / std`.

    Attributes:
        name: the preset's name (`caffe`, `tf`, `torch`, `unit`, `none`).
        scale, mean, std: per channel, in the model's channel order.
        bgr: reverse RGB to BGR (caffe-style models).
    """

    name: str
    scale: float = 1.0
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    bgr: bool = False

    def __call__(self, pixels):
        """(..., H, W, C) RGB pixels in [0, 255] -> float32 model input.

        NumPy arrays (any dtype) give a NumPy array; a TensorFlow tensor gives a tensor, so
        the map can sit inside a compiled, differentiated computation.
        """
        tensor = not isinstance(pixels, (np.ndarray, np.generic, list, tuple, int, float))
        x = pixels if tensor else np.asarray(pixels, np.float32)
        if self.bgr:
            x = x[..., ::-1]
        x = (x / self.scale - np.float32(self.mean)) / np.float32(self.std)
        return x if tensor else x.astype(np.float32)

    def invert(self, x):
        """Model input (..., H, W, C) -> float32 RGB pixels, unclipped: the exact inverse."""
        pixels = (np.asarray(x, np.float32) * np.float32(self.std) + np.float32(self.mean))
        pixels = pixels * np.float32(self.scale)
        return (pixels[..., ::-1] if self.bgr else pixels).astype(np.float32)


PREPROCESSING = {
    p.name: p
    for p in (
        Preprocessing("caffe", mean=(103.939, 116.779, 123.68), bgr=True),
        Preprocessing("tf", scale=127.5, mean=(1.0,)),
        Preprocessing("torch", scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        Preprocessing("unit", scale=255.0),
        Preprocessing("none"),
    )
}


def preset(name):
    """The preset called `name`.

    Raises:
        KvisError: an unknown name; the message lists the presets.
    """
    if name not in PREPROCESSING:
        raise KvisError(f"unknown preprocessing {name!r}; choose from {', '.join(PREPROCESSING)}")
    return PREPROCESSING[name]
