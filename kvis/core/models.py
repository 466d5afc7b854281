"""Loading models and what kvis knows about them: their class names and how they expect their
pixels, settled once per model and read by every technique.

What is known about a model is kept beside it (a weak registry: the model object is not
changed): given by the user (`load_model(..., class_names=, preprocessing=)`,
`configure_model`), read from a labels file next to a model file, or recognised from the
architecture (the keras.applications families of `kvis.core.architectures`, the image
converter of a keras-hub classifier's preprocessor, kvis's demo model, a model that rescales
its own input).
"""

import dataclasses
import difflib
import hashlib
import json
import re
import threading
import weakref
import zipfile
from functools import cache
from pathlib import Path

import keras
import numpy as np

from kvis.core import demo
from kvis.core.architectures import RESCALES_ITSELF, recognise
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.preprocessing import PREPROCESSING, affine, parse
from kvis.core.vocabulary import MODEL_NAMES, MODEL_SUFFIXES, RANDOM_WEIGHTS

APPLICATIONS = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LABEL_SUFFIXES = (".labels.txt", ".labels.json")
IMAGENET_MEAN = (123.68, 116.779, 103.939)
FASHION_MNIST_MEAN = (72.94,)

_known = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What kvis knows about a model.

    Attributes:
        preprocessing: the `kvis.core.preprocessing.Preprocessing` from pixels to model input, or
            None where kvis cannot tell.
        class_names: a name per output class, or None.
        mean_pixel: float32 (C,) in [0, 255], the training data's mean pixel: the neutral
            fill of occluders (mid-gray where unknown).
        random_weights: whether the weights are random (an application loaded without
            trained weights): every class it names is then labelled so.
    """

    preprocessing: object
    class_names: tuple
    mean_pixel: np.ndarray
    random_weights: bool = False


def load_model(spec, *, weights="imagenet", class_names=None, preprocessing=None):
    """Load a model by name or from a file, and settle its class names and preprocessing.

    Args:
        spec: `"vgg16"` or `"resnet50"` (Keras applications, 224x224 RGB, 1000 ImageNet classes),
            `"demo"` (the Fashion-MNIST CNN that ships with kvis), or the path of a `.keras`
            or `.h5` model file (legacy Keras 2 HDF5 included).
        weights: for the applications only: `"imagenet"` (through the Keras cache in
            `~/.keras/models`, downloaded once when there is a network), None for random
            weights, or the path of a weights file.
        class_names: a name per output class, or the path of a labels file (one name per
            line, or JSON: a list, or `{"0": "name", ...}`). Default: the labels file beside a
            model file, `simpsons.keras` -> `simpsons.labels.txt` or `simpsons.labels.json`,
            else the names kvis knows (ImageNet, Fashion-MNIST).
        preprocessing: how pixels become model input: a name from
            `kvis.core.preprocessing.PREPROCESSING` or a custom map (see `configure_model`);
            default: recognised from the architecture.

    Returns:
        The `keras.Model`, uncompiled.

    Raises:
        KvisError: the file is missing or does not load, the ImageNet weights are neither
            cached nor downloadable, or the class names do not match the outputs.

    Example:
        >>> model = kvis.load_model("simpsons.keras", class_names="characters.txt")
    """
    name = str(spec).lower()
    if name == "demo":
        model = keras.models.load_model(demo.data_path(demo.MODEL_FILE), compile=False)
    elif name in APPLICATIONS:
        model = _load_application(name, weights)
        if weights is None:
            _mark_random(model)
    else:
        model = _load_file(Path(spec))
        if class_names is None:
            class_names = next((label_file for label_file in _label_files(Path(spec))
                                if label_file.is_file()), None)
    return configure_model(model, class_names=class_names, preprocessing=preprocessing)


def configure_model(model, *, class_names=None, preprocessing=None):
    """Tell kvis a model's class names and preprocessing; every technique then uses them.

    Args:
        model: a Keras model (not changed: kvis keeps the facts beside it).
        class_names: a name per output class, or the path of a labels file (see `load_model`).
        preprocessing: a preset name (see `kvis.core.preprocessing.PREPROCESSING`), a custom
            map (`kvis.core.preprocessing.affine(mean=127, std=128)`, its spelling
            `"affine:mean=127,std=128"`, or a dict `{"mean": 127, "std": 128}`).

    Returns:
        The model, for chaining.

    Raises:
        KvisError: a preprocessing kvis does not know or refuses (an unknown key, a zero
            std, means or stds for another number of channels than the model's), a labels
            file that is missing or malformed, or a number of names that differs from the
            model's outputs.

    Example:
        >>> kvis.configure_model(model, class_names=["bart", "homer"], preprocessing="tf")
    """
    info = model_info(model)
    if isinstance(class_names, (str, Path)):
        class_names = read_labels(class_names)
    if class_names is not None:
        class_names = tuple(str(name) for name in class_names)
        outputs = model.output_shape[-1] if len(model.output_shape) == 2 else None
        if len(class_names) != outputs:
            raise KvisError(f"{len(class_names)} class names given for model {model.name!r} with "
                            f"{outputs} outputs")
    if preprocessing is not None:
        preprocessing = _fitting(model, parse(preprocessing))
    with _lock:
        _known[model] = dataclasses.replace(
            info, class_names=info.class_names if class_names is None else class_names,
            preprocessing=info.preprocessing if preprocessing is None else preprocessing)
    return model


def _fitting(model, preprocessing):
    """`preprocessing`, checked against the model's channels."""
    channels = model.input_shape[-1]
    if preprocessing.channels not in (1, channels):
        raise KvisError(f"preprocessing {preprocessing.name!r} is written for "
                        f"{preprocessing.channels} channels; model {model.name!r} takes "
                        f"{channels}")
    return preprocessing


def weights_digest(model):
    """A short hash of the model's weights (their values, in order): str of 16 hex digits,
    what checkpoints and sites record to tell the same model from a retrained one."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


def model_info(model):
    """The `ModelInfo` of a model: what was configured, else what kvis recognises."""
    with _lock:
        if model not in _known:
            _known[model] = _recognise(model)
        return _known[model]


def _mark_random(model):
    info = model_info(model)
    with _lock:
        _known[model] = dataclasses.replace(info, random_weights=True)


def preprocessing_for(model):
    """How `model` expects its pixels: a `kvis.core.preprocessing.Preprocessing`.

    Raises:
        KvisError: kvis cannot tell; the message says how to name it.
    """
    found = model_info(model).preprocessing
    if found is None:
        raise KvisError(f"cannot tell how model {model.name!r} expects its pixels: name the "
                        f"preprocessing, one of {', '.join(PREPROCESSING)} (CLI: --preprocess "
                        "NAME; Python: kvis.load_model(..., preprocessing=NAME) or "
                        "kvis.configure_model(model, preprocessing=NAME))")
    return found


def expects_bgr(model):
    """Whether the model takes its colour channels in BGR order (Caffe preprocessing), for
    drawing its filters and projections in RGB; False where kvis cannot tell the
    preprocessing (they are then drawn in the order the model has)."""
    found = model_info(model).preprocessing
    return bool(found and found.bgr)


def mean_pixel(model):
    """The mean pixel of the model's training data, float32 (C,) in [0, 255]: ImageNet's for
    the ImageNet architectures, Fashion-MNIST's for the demo model, mid-gray otherwise."""
    return model_info(model).mean_pixel


def class_names(model):
    """Names of the model's output classes, or None when kvis does not know them."""
    names = model_info(model).class_names
    return None if names is None else list(names)


def class_label(model, cls):
    """How a class (an index) is shown: its name where known, else "#index"; followed by
    "(random weights)" for a model whose weights are random, so no figure or line that names
    a class passes for a trained model's answer."""
    info = model_info(model)
    label = info.class_names[cls] if info.class_names else f"#{cls}"
    return f"{label} {RANDOM_WEIGHTS}" if info.random_weights else label


def model_label(model):
    """How a model is named on pages and figures: its name, with "(random weights)" where
    its weights are random."""
    return f"{model.name} {RANDOM_WEIGHTS}" if model_info(model).random_weights else model.name


def read_labels(path):
    """Class names from a labels file: one name per line (blank lines skipped), or JSON: a
    list of names, or a mapping from index to name (`{"0": "bart", ...}`; an
    `[id, name]` pair as in Keras's ImageNet index also works).

    Raises:
        KvisError: a missing file, invalid JSON, or indices that are not 0..N-1.
    """
    path = Path(path)
    if not path.is_file():
        raise KvisError(f"labels file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise KvisError(f"{path} is not valid JSON: {error}") from None
    if isinstance(data, list):
        return [str(name) for name in data]
    if isinstance(data, dict) and sorted(data, key=_as_int) == [str(i) for i in range(len(data))]:
        return [_label_text(data[str(i)]) for i in range(len(data))]
    raise KvisError(f"{path}: expected a JSON list of names or {{\"0\": \"name\", ...}}")


def folder_class_names(folder):
    """The class names a dataset folder with one subfolder per class gives, in the order
    `keras.utils.image_dataset_from_directory` assigns them (sorted subfolder names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KvisError(f"dataset folder not found: {folder}")
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    if not names:
        raise KvisError(f"{folder} has no subfolders, one per class")
    return names


def class_index(model, cls):
    """A class index from an index or a name, checked against the model's outputs.

    Raises:
        KvisError: an unknown name (the closest names are listed) or an index out of range.
    """
    names = class_names(model) or []
    if isinstance(cls, str) and not re.fullmatch(r"-?\d+", cls.strip()):
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
    index, outputs = int(cls), model.output_shape[-1]
    if not 0 <= index < outputs:
        raise KvisError(f"class index {index} is out of range (0-{outputs - 1})")
    return index


def class_indices(model, classes, count):
    """One class index per image, or None for each image's top prediction.

    Args:
        model: a Keras classifier.
        classes: None (each image's top prediction), one class for all (index or name), or
            one per image.
        count: the number of images.

    Returns:
        int64 (count,), or None when `classes` is None.
    """
    if classes is None:
        return None
    if isinstance(classes, (str, int, np.integer)):
        return np.full(count, class_index(model, classes), np.int64)
    if len(classes) != count:
        raise KvisError(f"{len(classes)} classes given for {count} images")
    return np.array([class_index(model, c) for c in classes], np.int64)


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
    if not _is_model_file(path):
        raise KvisError(f"{path} is not a Keras model file (a .keras file is a zip archive, an "
                        ".h5 file is HDF5)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:
        raise KvisError(f"could not load model {path}: {_first_line(error)}") from error


def _is_model_file(path):
    """Whether the file's own bytes say .keras (a zip archive) or .h5 (HDF5, whose signature
    may follow a user block of 512, 1024, 2048 ... bytes)."""
    if path.suffix.lower() == ".keras":
        return zipfile.is_zipfile(path)
    with open(path, "rb") as file:
        head = file.read(8)
        offset = 512
        while head != HDF5_SIGNATURE and offset < path.stat().st_size:
            file.seek(offset)
            head, offset = file.read(8), offset * 2
    return head == HDF5_SIGNATURE


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _label_files(path):
    return [path.with_name(path.stem + suffix) for suffix in LABEL_SUFFIXES]


def _as_int(key):
    return int(key) if str(key).isdigit() else -1


def _label_text(value):
    return str(value[-1] if isinstance(value, list) else value)


def _recognise(model):
    """What the architecture says (`kvis.core.architectures`): the keras.applications
    families, a model that rescales its own input, a keras-hub classifier's image converter,
    the demo model. Names alone are not enough: the layers' kinds and kernels must match
    too."""
    channels = model.input_shape[-1]
    gray = np.full(channels, 127.5, np.float32)
    graph = model_graph(model)
    family = recognise(graph)
    if family is RESCALES_ITSELF:
        return ModelInfo(PREPROCESSING["none"], None, gray)
    converted = _keras_hub_preprocessing(model)
    if converted is not None:
        return ModelInfo(converted, None, gray)
    outputs = model.output_shape[-1] if len(model.output_shape) == 2 else None
    if family is not None:
        names = tuple(imagenet_class_names()) if outputs == 1000 else None
        return ModelInfo(PREPROCESSING[family.preprocessing], names, np.float32(IMAGENET_MEAN))
    if _is_demo(model, graph):
        names = demo.CLASS_NAMES if outputs == len(demo.CLASS_NAMES) else None
        return ModelInfo(PREPROCESSING["unit"], names, np.float32(FASHION_MNIST_MEAN))
    return ModelInfo(None, None, gray)


def _is_demo(model, graph):
    """kvis's demo model: its name, input shape and first kernel."""
    first = next((node.layer for node in graph.nodes.values()
                  if isinstance(node.layer, keras.layers.Conv2D)), None)
    return (first is not None and first.name == "block1_conv1"
            and tuple(first.kernel.shape) == (3, 3, 1, 32)
            and model.input_shape[1:] == demo.INPUT_SHAPE
            and "kvis_demo" in [model.name, *(layer.name for layer in model.layers)])


def _keras_hub_preprocessing(model):
    """What a keras-hub task's image converter applies before the model (`pixels * scale +
    offset`), as the preset it equals (`torch` for keras-hub's ImageNet presets) or an
    `affine` map; None where the model has no converter."""
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if converter is None:
        return None
    shape = model.input_shape[-1]
    scale = np.broadcast_to(np.float64(1 if converter.scale is None else converter.scale), shape)
    offset = np.broadcast_to(np.float64(0 if converter.offset is None else converter.offset),
                             shape)
    found = affine(mean=_rounded(-offset / scale), std=_rounded(1 / scale))
    probe = np.linspace(0, 255, 3 * shape, dtype=np.float32).reshape(3, shape)
    same = [p for p in PREPROCESSING.values() if p.channels in (1, shape)
            and np.allclose(p(probe), found(probe), rtol=1e-5, atol=1e-5)]
    return same[0] if same else found


def _rounded(values):
    """Numbers to 7 significant digits (float32's), zeros unsigned; one number where all
    are equal."""
    values = tuple(float(f"{v:.7g}") + 0.0 for v in values)
    return values[:1] if len(set(values)) == 1 else values
