"""Image datasets for dataset-scale analyses: one `ImageSource` over a folder of image files, an
MNIST/Fashion-MNIST IDX file, the demo images, an array of model input or a `tf.data.Dataset`,
read a batch at a time for a model.

An image's id is its position in the source (a folder's files in sorted order of their relative
paths). Files are decoded by OpenCV in tf.data's threads and prefetched, so reading overlaps the
model's work; a file that cannot be read is left out of its batch and listed there, never fatal.
Nothing here holds a whole folder or IDX file as float arrays: a batch is made when it is needed.
(How each kind is read: `kvis.dataset.readers`.)
"""

import atexit
import functools
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from kvis.core import demo
from kvis.core.errors import KvisError
from kvis.core.models import folder_class_names
from kvis.core.vocabulary import IMAGE_SUFFIXES
from kvis.dataset.readers import (
    IDX_IMAGES,
    IDX_LABELS,
    ArrayReader,
    DatasetReader,
    FileReader,
    PixelReader,
    idx_labels_path,
    read_idx,
)

_open_batches = weakref.WeakSet()


@functools.cache
def _close_unfinished_batches_at_exit():
    """Registered once, on the first `batches()` call (nothing happens at import)."""
    atexit.register(lambda: [batches.close() for batches in list(_open_batches)])


@dataclass(frozen=True)
class ImageSource:
    """A dataset of images with ids 0..N-1, read a batch at a time for a model (`image_source`).

    Attributes:
        description: what it is, for messages and fingerprints ("folder data (1,204 files)").
        names: a name per image id (a file's path relative to the folder, else "image 17");
            None for a `tf.data.Dataset` of unknown length.
        labels: int64 (N,) class index per image, -1 where unknown; None when there are none.
        class_names: a name per class index, or None.
    """

    description: str
    names: list
    labels: np.ndarray
    class_names: list
    _reader: object = field(repr=False, compare=False)

    def __len__(self):
        """The number of images.

        Raises:
            KvisError: a `tf.data.Dataset` whose length is unknown.
        """
        if self.names is None:
            raise KvisError(f"{self.description} has no known length; give labels= or use a "
                            "dataset of single images with a known cardinality")
        return len(self.names)

    def batches(self, model, *, batch_size=32, start=0):
        """The images, a batch at a time, as `model` takes them.

        Files and IDX/demo pixels are resized and converted to the model's channels like
        `kvis.load_image` (one summary warning per source, not one per image) and preprocessed
        with `kvis.preprocessing_for(model)`; arrays and datasets are model input already.

        Args:
            model: the Keras model the images are for.
            batch_size: images per batch; batch i holds ids i*batch_size up to (i+1)*batch_size.
            start: batches to skip (to resume a scan); files and IDX images of skipped batches
                are not read. A `tf.data.Dataset` still produces them (its own pipeline runs).

        Yields:
            `kvis.dataset.readers.Batch`es in order of ids. A generator left unfinished is
            closed when the program exits, before the interpreter shuts down (a tf.data
            pipeline still reading then would deadlock it).

        Raises:
            KvisError: a batch_size below 1 or a negative start, images that do not fit the
                model, a model whose preprocessing kvis cannot tell, or (for a dataset with
                labels given) a dataset that yields another number of images.

        Example:
            >>> for batch in kvis.image_source("photos/").batches(model, batch_size=64):
            ...     scores = model(batch.x)
        """
        if int(batch_size) < 1 or int(start) < 0:
            raise KvisError(f"batch_size must be at least 1 and start at least 0; got "
                            f"{batch_size} and {start}")
        batches = self._reader.batches(self, model, int(batch_size), int(start))
        _close_unfinished_batches_at_exit()
        _open_batches.add(batches)
        return batches

    def pixels(self, model, ids):
        """The images of some ids as `model` sees them, for display.

        Args:
            model: the Keras model the images are for.
            ids: image ids, in any order (repeats allowed).

        Returns:
            uint8 (len(ids), H, W, C) in [0, 255], in the order of `ids`: for files and IDX/demo
            images the pixels `kvis.load_image` gives; for arrays and datasets the model input
            mapped back through the model's preprocessing (each image stretched to [0, 255]
            where kvis cannot tell it). A dataset is read once, in one pass.

        Raises:
            KvisError: an id out of range, or a file that cannot be read.
        """
        ids = np.asarray(ids, np.int64).reshape(-1)
        count = None if self.names is None else len(self.names)
        bad = ids[(ids < 0) | (ids >= (count if count is not None else np.inf))]
        if len(bad):
            raise KvisError(f"image id {bad[0]} is out of range for {self.description}")
        return self._reader.pixels(self, model, ids)


def image_source(data, *, labels=None):
    """The one way kvis takes a dataset of images.

    Args:
        data: one of
            - a folder path, searched recursively for image files (`IMAGE_SUFFIXES`), in sorted
              order of their relative paths. A folder whose top level holds subfolders and no
              image files is one subfolder per class: labels and class names as
              `keras.utils.image_dataset_from_directory` gives them (sorted subfolder names).
            - the path of an IDX images file (MNIST / Fashion-MNIST `*-images-idx3-ubyte`,
              gzipped or not); the labels file beside it (`*-labels-idx1-ubyte[.gz]`) is read
              when there is one, and the class names are Fashion-MNIST's (a path that names
              "fashion") or the digits (one that names "mnist").
            - "demo": the Fashion-MNIST test images that ship with kvis, with labels (the
              string; a folder called demo is `Path("demo")` or "./demo").
            - a NumPy array (N, H, W, C) of preprocessed model input (as every technique takes it).
            - a `tf.data.Dataset` of model input: single images (H, W, C) or batches, or
              (images, labels, ...) tuples of them. Its `labels` are None unless given (the
              labels inside the dataset are not collected), and its length is known only for
              single images of known cardinality, or from `labels`.
        labels: int class index per image (-1 where unknown), replacing any found (the class
            names found then no longer apply and are None).

    Returns:
        An `ImageSource`.

    Raises:
        KvisError: a missing path, an empty folder or one without image files, a file that is
            not an IDX images file (or a truncated one), an array that is not (N, H, W, C),
            an infinite dataset, or labels whose number differs from the images'.

    Example:
        >>> source = kvis.image_source("fashion-mnist/t10k-images-idx3-ubyte.gz")
        >>> source.class_names[source.labels[0]]
        'ankle boot'
    """
    if isinstance(data, tf.data.Dataset):
        source = _dataset_source(data)
    elif isinstance(data, str) and data == "demo":
        images, found = demo.demo_images()
        source = ImageSource(f"kvis demo images ({len(images):,} Fashion-MNIST test images)",
                             _numbered(len(images)), found.astype(np.int64),
                             list(demo.CLASS_NAMES), PixelReader(images))
    elif isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise KvisError(f"dataset not found: {path}")
        source = _folder_source(path) if path.is_dir() else _idx_source(path)
    else:
        source = _array_source(data)
    if labels is None:
        return source
    labels = _checked_labels(labels, None if source.names is None else len(source.names),
                             source.description)
    names = _numbered(len(labels)) if source.names is None else source.names
    return ImageSource(source.description, names, labels, None, source._reader)


def skipped_note(skipped, total, *, shown=20):
    """One line that counts and lists the files that could not be read (the one way kvis tells:
    a scan's warning, the report's dataset sections, `kvis attention --batch`).

    Args:
        skipped: `[(image id, name, reason)]`, as `Batch.skipped` and `Scan.skipped`.
        total: the images gone through, skipped ones included.
        shown: files listed by name; the rest are counted.
    """
    listed = "; ".join(f"{name} ({reason})" for _, name, reason in skipped[:shown])
    more = f"; and {len(skipped) - shown:,} more" if len(skipped) > shown else ""
    return (f"skipped {len(skipped):,} of {total:,} images that could not be read: "
            f"{listed}{more}")


# Sources ------------------------------------------------------------------------------------


def _folder_source(folder):
    if not any(folder.iterdir()):
        raise KvisError(f"dataset folder {folder} is empty")
    paths = sorted((p for p in folder.rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=lambda p: p.relative_to(folder).parts)
    if not paths:
        raise KvisError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    names = [p.relative_to(folder).as_posix() for p in paths]
    labels = class_names = None
    if all(len(p.relative_to(folder).parts) > 1 for p in paths):  # no images at the top level
        class_names = folder_class_names(folder)
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index[p.relative_to(folder).parts[0]] for p in paths], np.int64)
    classes = f", {len(class_names)} classes" if class_names else ""
    return ImageSource(f"folder {folder} ({len(paths):,} files{classes})", names, labels,
                       class_names, FileReader(paths))


def _idx_source(path):
    images = read_idx(path, IDX_IMAGES)
    labels = class_names = None
    labels_path = idx_labels_path(path)
    if labels_path is not None:
        labels = read_idx(labels_path, IDX_LABELS).astype(np.int64)
        if len(labels) != len(images):
            raise KvisError(f"{labels_path} holds {len(labels):,} labels for the "
                            f"{len(images):,} images of {path.name}")
        lowered = str(path).lower()
        if "fashion" in lowered:
            class_names = list(demo.CLASS_NAMES)
        elif "mnist" in lowered and labels.max(initial=0) < 10:
            class_names = [str(digit) for digit in range(10)]
    return ImageSource(f"IDX file {path} ({len(images):,} images "
                       f"{images.shape[1]}x{images.shape[2]})",
                       _numbered(len(images)), labels, class_names,
                       PixelReader(images[..., None]))


def _array_source(data):
    try:
        x = np.asarray(data)
    except (TypeError, ValueError):
        x = None
    if x is None or x.ndim != 4 or not len(x) or not np.issubdtype(x.dtype, np.number):
        shape = getattr(x, "shape", None)
        raise KvisError("a dataset is a folder, an IDX images file, \"demo\", an array (N, H, W, "
                        f"C) of model input or a tf.data.Dataset; got {type(data).__name__}"
                        + (f" of shape {shape}" if shape is not None else ""))
    return ImageSource(f"array of {len(x):,} images {x.shape[1]}x{x.shape[2]}x{x.shape[3]}",
                       _numbered(len(x)), None, None, ArrayReader(x))


def _dataset_source(dataset):
    spec = dataset.element_spec
    images = spec[0] if isinstance(spec, tuple) and spec else spec
    if not isinstance(images, tf.TensorSpec) or images.shape.rank not in (3, 4):
        raise KvisError("a tf.data.Dataset for kvis yields images (H, W, C), batches (N, H, W, "
                        f"C) or tuples of them and labels; its elements are {spec}")
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise KvisError("the tf.data.Dataset is infinite; take a finite part with .take(n)")
    count = (cardinality if images.shape.rank == 3 and cardinality >= 0 else None)
    described = "images" if images.shape.rank == 3 else "batches"
    size = "" if count is None else f"{count:,} "
    return ImageSource(f"tf.data.Dataset of {size}{described}",
                       None if count is None else _numbered(count), None, None,
                       DatasetReader(dataset, isinstance(spec, tuple),
                                     images.shape.rank == 4))


# Helpers ------------------------------------------------------------------------------------


def _numbered(count):
    return [f"image {i}" for i in range(count)]


def _checked_labels(labels, count, description):
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise KvisError(f"labels must be one integer class index per image; got an array of "
                        f"shape {labels.shape} and dtype {labels.dtype}")
    if count is not None and len(labels) != count:
        raise KvisError(f"{len(labels):,} labels given for the {count:,} images of {description}")
    if np.any(labels < -1):
        raise KvisError("labels are class indices, or -1 where unknown; got "
                        f"{int(labels.min())}")
    return labels.astype(np.int64)


