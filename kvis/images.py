"""Images in and out of models: reading with OpenCV, preprocessing the way a model expects."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from kvis.errors import KvisError


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
        tensor = tf.is_tensor(pixels)
        x = pixels if tensor else np.asarray(pixels, np.float32)
        if self.bgr:
            x = x[..., ::-1]
        x = (x / self.scale - np.float32(self.mean)) / np.float32(self.std)
        return x if tensor else x.astype(np.float32)

    def invert(self, x):
        """Model input (..., H, W, C) -> uint8 RGB pixels, clipped to [0, 255]."""
        pixels = (np.asarray(x, np.float32) * np.float32(self.std) + np.float32(self.mean))
        pixels = pixels * self.scale
        if self.bgr:
            pixels = pixels[..., ::-1]
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


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
_KNOWN_MODELS = {"vgg16": "caffe", "vgg19": "caffe", "resnet50": "caffe", "kvis_demo": "unit"}


@dataclass(frozen=True)
class ModelImage:
    """An image ready for a model.

    Attributes:
        name: where it came from (file name, or "array").
        pixels: uint8 (H, W, C) in [0, 255], RGB or grayscale: what the model sees, for display.
        x: float32 (1, H, W, C), the preprocessed model input.
    """

    name: str
    pixels: np.ndarray
    x: np.ndarray


def mean_pixel(model):
    """The mean pixel of the model's training data, the neutral fill for occluders: float32 (C,)
    in [0, 255]. ImageNet's mean for caffe-style models, Fashion-MNIST's for the demo model,
    mid-gray otherwise."""
    channels = model.input_shape[-1]
    if preprocessing_for_quietly(model).name == "caffe":
        return np.float32([123.68, 116.779, 103.939])[:channels]
    if "kvis_demo" in [model.name] + [layer.name for layer in model.layers]:
        return np.full(channels, 72.94, np.float32)  # Fashion-MNIST training mean
    return np.full(channels, 127.5, np.float32)


def preprocessing_for_quietly(model, name="auto"):
    """`preprocessing_for` without the warning for a model kvis does not recognise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return preprocessing_for(model, name)


def check_input(model, x):
    """Images as float32, checked against the model's input shape.

    Raises:
        KvisError: `x` is not a non-empty batch (N, H, W, C) that fits the model's input.
    """
    x = np.asarray(x, np.float32)
    expected = tuple(model.input_shape[1:])
    if x.ndim != 4 or not len(x) or any(e not in (None, a) for e, a in zip(expected, x.shape[1:])):
        raise KvisError(f"images of shape {x.shape} do not fit the model input "
                        f"(N, {', '.join(str(e) for e in expected)}); load them with "
                        "kvis.load_image")
    return x


def preprocessing_for(model, name="auto"):
    """The `Preprocessing` a model expects.

    Args:
        model: a Keras model.
        name: a preset name from `PREPROCESSING`, or "auto": caffe-style for VGG16 and
            ResNet50 (also as the base of a fine-tuned model), [0, 1] for the demo model, and
            raw pixels (with a warning) for a model kvis does not recognise.
    """
    if name != "auto":
        if name not in PREPROCESSING:
            choices = ", ".join(PREPROCESSING)
            raise KvisError(f"unknown preprocessing {name!r}; choose from {choices}")
        return PREPROCESSING[name]
    names = [model.name] + [layer.name for layer in model.layers]
    for known, preset in _KNOWN_MODELS.items():
        if known in names:
            return PREPROCESSING[preset]
    warnings.warn(f"cannot tell how model {model.name!r} expects its input: feeding raw 0-255 "
                  "pixels; choose a preprocessing (caffe, tf, torch, unit) if it expects another",
                  stacklevel=2)
    return PREPROCESSING["none"]


def load_image(source, model, *, preprocessing="auto"):
    """Read an image and prepare it for `model` (size, channels, preprocessing).

    Args:
        source: an image file path, or an array (H, W) or (H, W, C) of RGB pixels in [0, 255].
        model: the Keras model the image is for.
        preprocessing: a preset name, or "auto" (see `preprocessing_for`).

    Returns:
        A `ModelImage`.

    Raises:
        KvisError: the file is missing or unreadable, or the array has an unusable shape.
    """
    height, width, channels = model.input_shape[1:4]
    size = None if height is None or width is None else (height, width)
    pixels = read_image(source, size=size, channels=channels)
    name = Path(source).name if isinstance(source, (str, Path)) else "array"
    return ModelImage(name, pixels, preprocessing_for(model, preprocessing)(pixels[None]))


def read_image(source, *, size=None, channels=3):
    """Read an image as uint8 pixels, converted and resized as asked (with a warning).

    Args:
        source: a file path (any format OpenCV reads), or an array (H, W) or (H, W, C) with
            C in 1, 3, 4, of RGB(A) pixels in [0, 255].
        size: `(height, width)` to resize to, or None to keep the size.
        channels: 3 for RGB, 1 for grayscale.

    Returns:
        uint8 (H, W, channels).
    """
    pixels, name = (_read_file(Path(source)) if isinstance(source, (str, Path))
                    else (_as_pixels(source), "array"))
    if pixels.shape[-1] == 4:
        pixels = pixels[..., :3]
    if pixels.shape[-1] != channels:
        kind = "grayscale" if channels == 1 else "RGB"
        warnings.warn(f"{name}: converted to {kind} for a {channels}-channel model", stacklevel=2)
        code = cv2.COLOR_RGB2GRAY if channels == 1 else cv2.COLOR_GRAY2RGB
        pixels = cv2.cvtColor(pixels, code).reshape(*pixels.shape[:2], channels)
    if size is not None and pixels.shape[:2] != tuple(size):
        warnings.warn(f"{name}: resized from {pixels.shape[0]}x{pixels.shape[1]} to "
                      f"{size[0]}x{size[1]} (height x width)", stacklevel=2)
        shrink = pixels.shape[0] * pixels.shape[1] > size[0] * size[1]
        resized = cv2.resize(pixels, (size[1], size[0]),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        pixels = resized.reshape(*size, channels)
    return pixels


def _read_file(path):
    if not path.is_file():
        raise KvisError(f"image not found: {path}")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise KvisError(f"cannot read image {path}: not an image format OpenCV can decode")
    if pixels.dtype == np.uint16:
        pixels = (pixels // 257).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4
                              else cv2.COLOR_BGR2RGB)
    return _as_pixels(pixels), path.name


def _as_pixels(array):
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise KvisError(f"an image must be (H, W) or (H, W, C) with C in 1, 3, 4; "
                        f"got shape {array.shape}")
    return np.clip(np.round(array), 0, 255).astype(np.uint8)
