"""Images in and out of models: reading with OpenCV, preparing them the way a model expects, and
the one way every technique takes images (`as_images`)."""

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kvis.core.errors import KvisError
from kvis.core.models import preprocessing_for


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


def check_input(model, x):
    """Model input as float32, checked against the model's input shape.

    Raises:
        KvisError: `x` is not a non-empty batch (N, H, W, C) that fits the model's input.
    """
    try:
        x = np.asarray(x, np.float32)
    except (TypeError, ValueError):
        raise KvisError(f"images must be kvis.load_image results or a float array (N, H, W, C); "
                        f"got {type(x).__name__}") from None
    expected = tuple(model.input_shape[1:])
    if x.ndim != 4 or not len(x) or any(e not in (None, a) for e, a in zip(expected, x.shape[1:])):
        raise KvisError(f"images of shape {x.shape} do not fit the model input "
                        f"(N, {', '.join(str(e) for e in expected)}); load them with "
                        "kvis.load_image")
    return x


def load_image(source, model):
    """Read an image and prepare it for `model` (size, channels, preprocessing).

    The preprocessing is the model's (`kvis.preprocessing_for`): recognised from its
    architecture, or named once with `kvis.load_model(..., preprocessing=)` or
    `kvis.configure_model`.

    Args:
        source: an image file path, or an array (H, W) or (H, W, C) of RGB pixels in [0, 255].
        model: the Keras model the image is for.

    Returns:
        A `ModelImage`.

    Raises:
        KvisError: the file is missing or unreadable, the array has an unusable shape, or
            kvis cannot tell the model's preprocessing.
    """
    preprocess = preprocessing_for(model)
    height, width, channels = model.input_shape[1:4]
    size = None if height is None or width is None else (height, width)
    pixels = read_image(source, size=size, channels=channels)
    name = Path(source).name if isinstance(source, (str, Path)) else "array"
    return ModelImage(name, pixels, preprocess(pixels[None]))


@dataclass(frozen=True)
class Images:
    """A batch of images as every technique takes it: model input, pixels to draw, names.

    Attributes:
        x: float32 (N, H, W, C), the model input.
        pixels: uint8 (N, H, W, C) in [0, 255], RGB or grayscale, for display: the loaded
            pixels, or for an array the model input mapped back through the model's
            preprocessing (each image stretched to [0, 255] where that is unknown).
        names: a name per image ("image 0", ... for an array).
    """

    x: np.ndarray
    pixels: np.ndarray
    names: list


def as_images(model, images):
    """The one way kvis takes images: what `load_image` returns, or an array.

    An integer array (uint8, as OpenCV and PIL return) holds pixels and goes through the
    model's preprocessing; a float array is model input, already preprocessed.

    Args:
        model: the Keras model the images are for.
        images: a `ModelImage`, a list of them (one size), an integer array (N, H, W, C) of
            pixels in [0, 255], or an already-preprocessed float array (N, H, W, C) (a tensor
            works too).

    Returns:
        An `Images`.

    Raises:
        KvisError: no images, images of different sizes, a shape that does not fit the
            model's input, integer pixels outside [0, 255], or integer pixels for a model
            whose preprocessing kvis cannot tell.
    """
    if isinstance(images, ModelImage):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(
            isinstance(image, ModelImage) for image in images):
        if len({image.pixels.shape for image in images}) > 1:
            sizes = ", ".join(f"{image.name} {image.pixels.shape}" for image in images)
            raise KvisError(f"images differ in size ({sizes}); load them for the same model")
        x = check_input(model, np.concatenate([image.x for image in images]))
        return Images(x, np.stack([image.pixels for image in images]),
                      [image.name for image in images])
    if isinstance(images, (list, tuple)) and any(isinstance(i, ModelImage) for i in images):
        raise KvisError("a list of images must hold kvis.ModelImage objects only")
    if _holds_integers(images):
        return _pixel_images(model, np.asarray(images))
    x = check_input(model, images)
    return Images(x, display_pixels(model, x), [f"image {i}" for i in range(len(x))])


def _holds_integers(images):
    dtype = getattr(images, "dtype", None)
    return dtype is not None and np.issubdtype(np.dtype(getattr(dtype, "as_numpy_dtype", dtype)),
                                               np.integer)


def _pixel_images(model, pixels):
    """Images from an integer array of pixels (N, H, W, C), through the preprocessing."""
    check_input(model, pixels)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise KvisError(f"integer images are pixels in [0, 255]; got values in "
                        f"[{pixels.min()}, {pixels.max()}]")
    pixels = pixels.astype(np.uint8)
    x = check_input(model, preprocessing_for(model)(pixels))
    return Images(x, pixels, [f"image {i}" for i in range(len(x))])


def read_image(source, *, size=None, channels=3, warn=True):
    """Read an image as uint8 pixels, converted and resized as asked (with a warning).

    Args:
        source: a file path (any format OpenCV reads), or an array (H, W) or (H, W, C) with
            C in 1, 3, 4, of RGB(A) pixels in [0, 255].
        size: `(height, width)` to resize to, or None to keep the size.
        channels: 3 for RGB, 1 for grayscale.
        warn: warn about each conversion and resize, and about an alpha channel that is not
            fully opaque (a dataset summarises them instead).

    Returns:
        uint8 (H, W, channels).
    """
    pixels, name = (read_file(Path(source)) if isinstance(source, (str, Path))
                    else (_as_pixels(source), "array"))
    if pixels.shape[-1] == 4:
        if warn and (see_through := np.mean(pixels[..., 3] < 255)):
            warnings.warn(f"{name}: alpha channel dropped ({see_through:.0%} of the pixels are "
                          "transparent or translucent; the model sees their colour)",
                          stacklevel=2)
        pixels = pixels[..., :3]
    if pixels.shape[-1] != channels:
        kind = "grayscale" if channels == 1 else "RGB"
        if warn:
            warnings.warn(f"{name}: converted to {kind} for a {channels}-channel model",
                          stacklevel=2)
        code = cv2.COLOR_RGB2GRAY if channels == 1 else cv2.COLOR_GRAY2RGB
        pixels = cv2.cvtColor(pixels, code).reshape(*pixels.shape[:2], channels)
    if size is not None and pixels.shape[:2] != tuple(size):
        if warn:
            warnings.warn(f"{name}: resized from {pixels.shape[0]}x{pixels.shape[1]} to "
                          f"{size[0]}x{size[1]} (height x width)", stacklevel=2)
        shrink = pixels.shape[0] * pixels.shape[1] > size[0] * size[1]
        resized = cv2.resize(pixels, (size[1], size[0]),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        pixels = resized.reshape(*size, channels)
    return pixels


def read_file(path):
    """The pixels of an image file as stored (RGB or RGBA, or gray (H, W, 1)), and its name.

    Raises:
        KvisError: a missing file, a folder, or a file OpenCV cannot decode.
    """
    if path.is_dir():
        raise KvisError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise KvisError(f"image not found: {path}")
    with _QUIET_OPENCV:
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise KvisError(f"cannot read image {path}: not an image format OpenCV can decode")
    if pixels.dtype == np.uint16:
        pixels = (pixels // 257).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4
                              else cv2.COLOR_BGR2RGB)
    return _as_pixels(pixels), path.name


class _QuietOpenCV:
    """OpenCV's own log lines ("[ WARN:0@0.02] ... imread_(...)") silenced while files are read,
    from any number of threads: kvis says itself what it could not read. The caller's log level
    comes back when the last read ends."""

    def __init__(self):
        self.lock, self.readers, self.saved = threading.Lock(), 0, None

    def __enter__(self):
        with self.lock:
            if not self.readers:
                self.saved = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            self.readers += 1

    def __exit__(self, *error):
        with self.lock:
            self.readers -= 1
            if not self.readers:
                cv2.utils.logging.setLogLevel(self.saved)


_QUIET_OPENCV = _QuietOpenCV()


def _as_pixels(array):
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise KvisError(f"an image must be (H, W) or (H, W, C) with C in 1, 3, 4; "
                        f"got shape {array.shape}")
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


def one_image(model, images, purpose):
    """`as_images` for a technique that works on one image.

    Raises:
        KvisError: as for `as_images`, or more than one image: "`purpose` one image; got N
            images" (`purpose` such as "occlusion maps").
    """
    batch = as_images(model, images)
    if len(batch.x) != 1:
        raise KvisError(f"{purpose} one image; got {len(batch.x)} images")
    return batch


def unit_range(array):
    """`array` stretched to [0, 1] by its minimum and maximum; a constant array gives zeros."""
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def display_pixels(model, x):
    """Model input (N, H, W, C) as uint8 pixels to draw: through the model's preprocessing
    where kvis knows it, else each image stretched to [0, 255]."""
    try:
        pixels = preprocessing_for(model).invert(x)
    except KvisError:
        low = x.min(axis=(1, 2, 3), keepdims=True)
        spread = x.max(axis=(1, 2, 3), keepdims=True) - low
        pixels = 255 * (x - low) / np.where(spread > 0, spread, 1)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)
