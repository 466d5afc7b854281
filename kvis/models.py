"""Loading models: Keras applications, model files, the demo model; their class names."""

import difflib
import json
from functools import cache
from pathlib import Path

import keras
import numpy as np

from kvis import demo
from kvis.errors import KvisError

APPLICATIONS = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}
MODEL_NAMES = ("demo", *APPLICATIONS)
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model(spec, *, weights="imagenet"):
    """Load a model by name or from a file.

    Args:
        spec: `"vgg16"` or `"resnet50"` (Keras applications, 224x224 RGB, 1000 ImageNet classes),
            `"demo"` (the Fashion-MNIST CNN that ships with kvis), or the path of a `.keras`
            or `.h5` model file (legacy Keras 2 HDF5 included).
        weights: for the applications only: `"imagenet"` (through the Keras cache in
            `~/.keras/models`, downloaded once when there is a network), None for random
            weights, or the path of a weights file.

    Returns:
        The `keras.Model`, uncompiled.

    Raises:
        KvisError: the file is missing or does not load, or the ImageNet weights are neither
            cached nor downloadable.

    Example:
        >>> model = kvis.load_model("vgg16", weights=None)
    """
    name = str(spec).lower()
    if name == "demo":
        return keras.models.load_model(demo.data_path(demo.MODEL_FILE), compile=False)
    if name in APPLICATIONS:
        return _load_application(name, weights)
    return _load_file(Path(spec))


def class_names(model):
    """Names of the model's output classes, or None when kvis does not know them.

    A model with 1000 outputs is taken to be an ImageNet classifier; the demo model has the
    Fashion-MNIST classes.
    """
    outputs = model.output_shape[-1] if len(model.output_shape) == 2 else None
    if model.name == "kvis_demo" and outputs == len(demo.CLASS_NAMES):
        return list(demo.CLASS_NAMES)
    if outputs == 1000:
        return imagenet_class_names()
    return None


def class_index(model, cls):
    """A class index from an index or a name, checked against the model's outputs.

    Raises:
        KvisError: an unknown name (the closest names are listed) or an index out of range.
    """
    names = class_names(model) or []
    if isinstance(cls, str) and not cls.isdigit():
        if not names:
            raise KvisError(f"kvis does not know the class names of model {model.name!r}; "
                            f"give class indices instead of {cls!r}")
        if cls not in names:
            close = difflib.get_close_matches(cls, names, n=5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise KvisError(f"unknown class {cls!r} for model {model.name!r}{hint}")
        return names.index(cls)
    if not isinstance(cls, (str, int, np.integer)):
        raise KvisError(f"a class is an integer index or a name; got {cls!r}")
    outputs = model.output_shape[-1]
    if not 0 <= int(cls) < outputs:
        raise KvisError(f"class index {cls} is out of range (0-{outputs - 1})")
    return int(cls)


def class_indices(model, classes, count):
    """One class index per image, -1 standing for the image's top prediction.

    Args:
        model: a Keras classifier.
        classes: None (each image's top prediction), one class for all (index or name), or
            one per image.
        count: the number of images.

    Returns:
        int64 (count,).
    """
    if classes is None:
        return np.full(count, -1, np.int64)
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes] * count
    if len(classes) != count:
        raise KvisError(f"{len(classes)} classes given for {count} images")
    return np.array([class_index(model, c) for c in classes], np.int64)


def resolve_classes(model, x, classes=None):
    """One class index per image: given, or each image's top prediction (computed here).

    Args:
        model: a Keras classifier.
        x: float32 (N, H, W, C), preprocessed model input.
        classes: as for `class_indices`.

    Returns:
        int64 (N,), every entry a real class.
    """
    wanted = class_indices(model, classes, len(x))
    if np.any(wanted < 0):
        top = model.predict(x, verbose=0, batch_size=32).argmax(axis=-1)
        wanted = np.where(wanted < 0, top, wanted)
    return wanted.astype(np.int64)


@cache
def imagenet_class_names():
    """The 1000 ImageNet class names, in the order of the models' outputs."""
    with open(demo.data_path("imagenet_class_index.json")) as f:
        index = json.load(f)
    return [index[str(i)][1] for i in range(1000)]


def _load_application(name, weights):
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise KvisError(f"weights file not found: {weights}")
    try:
        return APPLICATIONS[name](weights=weights)
    except Exception as error:
        if weights == "imagenet":
            raise KvisError(
                f"ImageNet weights for {name} are not in the Keras cache (~/.keras/models) and "
                f"could not be downloaded ({_first_line(error)}); use weights=None "
                "(--weights none) or a weights file"
            ) from error
        raise KvisError(
            f"could not load weights {weights} into {name}: {_first_line(error)}"
        ) from error


def _load_file(path):
    if not path.exists():
        choices = ", ".join(MODEL_NAMES)
        raise KvisError(f"model file not found: {path} (or use one of: {choices})")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise KvisError(f"{path}: a model file must end in {', '.join(MODEL_SUFFIXES)}")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:
        raise KvisError(f"could not load model {path}: {_first_line(error)}") from error


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
