"""How a model expects its pixels: affine maps from RGB pixels in [0, 255] to model input.

The presets follow `keras.applications.imagenet_utils.preprocess_input`: "caffe" (VGG, ResNet:
BGR, ImageNet mean subtracted), "tf" ([-1, 1]), "torch" ([0, 1], ImageNet mean and standard
deviation), and "unit" ([0, 1]); "none" feeds the pixels as they are (a model that rescales
inside itself). `affine` makes any other such map, and `parse` reads one from its spelling
(`"tf"`, `"affine:mean=127,std=128"`), which is also its name.
"""

import re
from dataclasses import dataclass

import numpy as np

from kvis.core.errors import KvisError

AFFINE_KEYS = ("scale", "mean", "std", "bgr")
AFFINE_HELP = ("affine:mean=M,std=S[,scale=F][,bgr], one value or one per channel separated by "
               "'/' (affine:mean=123.675/116.28/103.53,std=58.395/57.12/57.375)")


@dataclass(frozen=True)
class Preprocessing:
    """An affine map from pixels to model input: `(pixels[..., order] * scale - mean) / std`.

    Attributes:
        name: the preset's name (`caffe`, `tf`, `torch`, `unit`, `none`), or the spelling of
            a custom map (`affine:mean=127,std=128`), which `parse` reads back.
        scale: one number; mean, std: one value, or one per channel in the model's channel
            order, in scaled pixel units.
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
        # Divided by 1 / scale (255 for 1/255), as preprocess_input divides: the same
        # float32 values bit for bit.
        x = (x / np.float32(1 / self.scale) - np.float32(self.mean)) / np.float32(self.std)
        return x if tensor else x.astype(np.float32)

    def invert(self, x):
        """Model input (..., H, W, C) -> float32 RGB pixels, unclipped: the exact inverse."""
        pixels = (np.asarray(x, np.float32) * np.float32(self.std) + np.float32(self.mean))
        pixels = pixels * np.float32(1 / self.scale)
        return (pixels[..., ::-1] if self.bgr else pixels).astype(np.float32)

    @property
    def channels(self):
        """How many channels the map is written for: 1 (any) or the length of mean/std."""
        return max(len(self.mean), len(self.std), 3 if self.bgr else 1)


PREPROCESSING = {
    p.name: p
    for p in (
        Preprocessing("caffe", mean=(103.939, 116.779, 123.68), bgr=True),
        Preprocessing("tf", scale=1 / 127.5, mean=(1.0,)),
        Preprocessing("torch", scale=1 / 255, mean=(0.485, 0.456, 0.406),
                      std=(0.229, 0.224, 0.225)),
        Preprocessing("unit", scale=1 / 255),
        Preprocessing("none"),
    )
}


def preset(name):
    """The preset called `name`.

    Raises:
        KvisError: an unknown name; the message lists the presets.
    """
    if name not in PREPROCESSING:
        raise KvisError(f"unknown preprocessing {name!r}; choose from "
                        f"{', '.join(PREPROCESSING)}, or {AFFINE_HELP}")
    return PREPROCESSING[name]


def affine(mean=0.0, std=1.0, *, scale=1.0, bgr=False):
    """A custom preprocessing: `(pixels[..., order] * scale - mean) / std`.

    Args:
        mean, std: a number, or one per channel (in the model's channel order).
        scale: one positive number that multiplies the pixels first (1/255 puts them in [0, 1]).
        bgr: reverse RGB to BGR before the rest.

    Returns:
        A `Preprocessing` named by its spelling, e.g. `affine:mean=127,std=128`.

    Raises:
        KvisError: a zero or non-finite std or scale, a non-finite mean, or a number of means
            and stds that differ (other than one value for all).

    Example:
        >>> kvis.load_model("mine.keras", preprocessing=affine(mean=127, std=128))  # (x-127)/128
    """
    mean, std = _values("mean", mean), _values("std", std)
    scale = _values("scale", scale)
    if len(scale) != 1:
        raise KvisError(f"preprocessing scale is one number; got {len(scale)}")
    if 0 in std or scale[0] == 0:
        raise KvisError(f"preprocessing {'std' if 0 in std else 'scale'} must not be zero")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise KvisError(f"preprocessing has {len(mean)} means and {len(std)} stds; give one "
                        "value for all channels or one per channel")
    name = ",".join(filter(None, (f"mean={_spell(mean)}", f"std={_spell(std)}",
                                  f"scale={_spell(scale)}" if scale != (1.0,) else "",
                                  "bgr" if bgr else "")))
    return Preprocessing(f"affine:{name}", scale[0], mean, std, bool(bgr))


def parse(spec):
    """A preprocessing from its spelling: a preset name, an `affine:...` spelling, a mapping
    of `affine`'s keywords, or a `Preprocessing` (returned as it is).

    The spelling `affine:mean=M,std=S,scale=F,bgr` takes one value or one per channel
    separated by "/" for mean and std, a number or a fraction (`1/255`) for scale, and the
    flag `bgr`; keys left out keep `affine`'s defaults.

    Raises:
        KvisError: an unknown name or key, a value that is not a number, or what `affine`
            refuses.
    """
    if isinstance(spec, Preprocessing):
        return spec
    if isinstance(spec, dict):
        _check_keys(spec, str(spec))
        return affine(**spec)
    text = str(spec).strip()
    if not text.startswith("affine:"):
        return preset(text)
    fields = {}
    for item in filter(None, (part.strip() for part in text[len("affine:"):].split(","))):
        key, _, value = item.partition("=")
        fields[key.strip()] = True if key.strip() == "bgr" and not value else value
    _check_keys(fields, text)
    if "scale" in fields:
        fields["scale"] = _fraction(fields["scale"], text)
    for key in ("mean", "std"):
        if key in fields:
            fields[key] = [_number(value, text) for value in str(fields[key]).split("/")]
    if not isinstance(fields.get("bgr", False), bool):
        raise KvisError(f"preprocessing {text!r}: bgr is a flag, written without a value")
    return affine(**fields)


def _check_keys(fields, text):
    unknown = [key for key in fields if key not in AFFINE_KEYS]
    if unknown:
        raise KvisError(f"preprocessing {text!r}: unknown key {unknown[0]!r}; keys: "
                        f"{', '.join(AFFINE_KEYS)}")


def _values(key, value):
    try:
        values = tuple(float(v) for v in np.ravel(np.asarray(value, np.float64)))
    except (TypeError, ValueError):
        values = ()
    if not values or not all(np.isfinite(values)):
        raise KvisError(f"preprocessing {key} must be finite numbers; got {value!r}")
    return values


def _number(text, spec):
    try:
        return float(text)
    except ValueError:
        raise KvisError(f"preprocessing {spec!r}: {text!r} is not a number") from None


def _fraction(text, spec):
    match = re.fullmatch(r"\s*([^/]+?)\s*/\s*([^/]+?)\s*", text)
    if match:
        denominator = _number(match[2], spec)
        if denominator == 0:
            raise KvisError(f"preprocessing {spec!r}: scale {text} divides by zero")
        return _number(match[1], spec) / denominator
    return _number(text, spec)


def _spell(values):
    """Numbers as `parse` reads them back exactly: `127`, `0.229`, `123.675/116.28/103.53`."""
    return "/".join(repr(v)[:-2] if repr(v).endswith(".0") else repr(v) for v in values)
