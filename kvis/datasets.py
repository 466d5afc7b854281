"""Image datasets for dataset-scale analyses: one `ImageSource` over a folder of image files, an
MNIST/Fashion-MNIST IDX file, the demo images, an array of model input or a `tf.data.Dataset`,
read a batch at a time for a model.

An image's id is its position in the source (a folder's files in sorted order of their relative
paths). Files are decoded by OpenCV in tf.data's threads and prefetched, so reading overlaps the
model's work; a file that cannot be read is left out of its batch and listed there, never fatal.
Nothing here holds a whole folder or IDX file as float arrays: a batch is made when it is needed.
"""

import atexit
import functools
import gzip
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from kvis import demo
from kvis.errors import KvisError
from kvis.images import check_input, display_pixels, read_file, read_image
from kvis.models import folder_class_names, preprocessing_for
from kvis.vocabulary import IMAGE_SUFFIXES

IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions: (N, rows, columns)
IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension: (N,)
_RESIZED, _CONVERTED = 1, 2


_open_batches = weakref.WeakSet()


@functools.cache
def _close_unfinished_batches_at_exit():
    """Registered once, on the first `batches()` call (nothing happens at import)."""
    atexit.register(lambda: [batches.close() for batches in list(_open_batches)])


@dataclass(frozen=True)
class Batch:
    """One batch of a source, ready for the model.

    Attributes:
        ids: int64 (n,), increasing: the images' positions in the source.
        x: float32 (n, H, W, C), their model input. A batch whose files were all unreadable
            has n = 0 and still comes, so that batch i always covers the same ids.
        skipped: `[(image id, name, reason)]` for the files of this batch that could not be
            read or decoded (left out of `ids` and `x`).
    """

    ids: np.ndarray
    x: np.ndarray
    skipped: list


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
            `Batch`es in order of ids. A generator left unfinished is closed when the program
            exits, before the interpreter shuts down (a tf.data pipeline still reading then
            would deadlock it).

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
            - a NumPy array (N, H, W, C) of preprocessed model input (as for `kvis.as_images`).
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
                             list(demo.CLASS_NAMES), _Pixels(images))
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
                       class_names, _Files(paths))


def _idx_source(path):
    images = _read_idx(path, IDX_IMAGES)
    labels = class_names = None
    labels_path = _idx_labels_path(path)
    if labels_path is not None:
        labels = _read_idx(labels_path, IDX_LABELS).astype(np.int64)
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
                       _numbered(len(images)), labels, class_names, _Pixels(images[..., None]))


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
                       _numbered(len(x)), None, None, _Inputs(x))


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
                       _Dataset(dataset, isinstance(spec, tuple), images.shape.rank == 4))


# Readers: how each kind of source makes batches and pixels ----------------------------------


class _Decoded:
    """Pixels that still need fitting to the model (size, channels) and preprocessing, read
    and prepared in tf.data's threads; subclasses say how one image's pixels are read."""

    per_image = True  # map over single ids (files: decode in parallel) or over batches of ids

    def __init__(self):
        self.warned = set()

    def raw(self, i):
        """uint8 (h, w, c) pixels of image i as stored."""
        raise NotImplementedError

    def shape(self, model):
        size, channels = _model_size(model)
        if size is None:
            raise KvisError(f"model {model.name!r} takes images of any size; a dataset scan "
                            "needs a model with a fixed input size (H, W)")
        return (*size, channels)

    def fitted(self, ids, shape):
        """uint8 (n, *shape) pixels of some ids as `read_image` fits them to the model (zeros
        where unreadable), int32 (n,) flags of what that changed, and a reason per id ("" when
        read)."""
        pixels = np.zeros((len(ids), *shape), np.uint8)
        flags, reasons = np.zeros(len(ids), np.int32), [""] * len(ids)
        for n, i in enumerate(ids):
            try:
                pixels[n], flags[n] = _fit(self.raw(i), shape)
            except (KvisError, OSError, ValueError, cv2.error) as error:
                reasons[n] = str(error).splitlines()[0] if str(error) else type(error).__name__
        return pixels, flags, reasons

    def batches(self, source, model, batch_size, start):
        preprocess = preprocessing_for(model)
        shape = self.shape(model)
        return self._batches(source, preprocess, shape, batch_size, start)

    def _batches(self, source, preprocess, shape, batch_size, start):
        types = (tf.int64, tf.float32, tf.string, tf.int32)

        def prepared(ids):
            pixels, flags, reasons = self.fitted(ids, shape)
            return ids, preprocess(pixels), np.array([r.encode() for r in reasons], object), flags

        def one(i):
            outputs = tf.numpy_function(lambda i: [a[0] for a in prepared(i[None])], [i], types,
                                        stateful=False)
            outputs[1].set_shape(shape)
            return tuple(outputs)

        def many(ids):
            outputs = tf.numpy_function(prepared, [ids], types, stateful=False)
            outputs[1].set_shape((None, *shape))
            return tuple(outputs)

        ids = tf.data.Dataset.from_tensor_slices(np.arange(start * batch_size, len(source),
                                                           dtype=np.int64))
        if self.per_image:
            ids = ids.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            ids = ids.batch(batch_size)
        else:
            ids = ids.batch(batch_size).map(many, num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
        counts = {_RESIZED: 0, _CONVERTED: 0}
        iterator = ids.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
        try:
            for batch_ids, x, reasons, flags in iterator:
                good = reasons == b""
                for flag in counts:
                    counts[flag] += int(np.count_nonzero(flags[good] & flag))
                yield Batch(batch_ids[good], x[good],
                            [(int(i), source.names[i], reason.decode())
                             for i, reason in zip(batch_ids[~good], reasons[~good])])
        finally:
            # Stop the readers now: a pipeline left running until the interpreter exits can
            # deadlock there (its Python readers wait for the interpreter's lock).
            del iterator
        self.summarise(source, counts, shape)

    def pixels(self, source, model, ids):
        shape = self.shape(model)
        unique, where = np.unique(ids, return_inverse=True)
        pixels, flags, reasons = self.fitted(unique, shape)
        for i, reason in zip(unique, reasons):
            if reason:
                raise KvisError(f"cannot read image {i} ({source.names[i]}): {reason}")
        self.summarise(source, {flag: int(np.count_nonzero(flags & flag))
                                for flag in (_RESIZED, _CONVERTED)}, shape)
        return pixels[where.reshape(-1)]

    def summarise(self, source, counts, shape):
        """One warning per source and kind of change, however many images it touched."""
        kind = "grayscale" if shape[2] == 1 else "RGB"
        notes = {_RESIZED: f"resized {{:,}} images to {shape[0]}x{shape[1]} (height x width)",
                 _CONVERTED: f"converted {{:,}} images to {kind} for a {shape[2]}-channel model"}
        for flag, note in notes.items():
            if counts[flag] and (flag, shape) not in self.warned:
                self.warned.add((flag, shape))
                warnings.warn(f"{source.description}: {note.format(counts[flag])}",
                              stacklevel=2)


class _Files(_Decoded):
    def __init__(self, paths):
        super().__init__()
        self.paths = paths

    def raw(self, i):
        return read_file(self.paths[int(i)])[0]


class _Pixels(_Decoded):
    """uint8 (N, h, w, c) pixels in memory or memory-mapped (IDX files, the demo images)."""

    per_image = False

    def __init__(self, pixels):
        super().__init__()
        self.stored = pixels

    def raw(self, i):
        return np.asarray(self.stored[int(i)])

    def fitted(self, ids, shape):
        if self.stored.shape[1:] != tuple(shape):
            return super().fitted(ids, shape)
        return (np.asarray(self.stored[np.asarray(ids)]), np.zeros(len(ids), np.int32),
                [""] * len(ids))

    def shape(self, model):
        size, channels = _model_size(model)
        return (*(size or self.stored.shape[1:3]), channels)


class _Inputs:
    """An array of model input: batches are slices; pixels come back through the model's
    preprocessing."""

    def __init__(self, x):
        self.x = x

    def batches(self, source, model, batch_size, start):
        check_input(model, self.x[:1])
        return self._batches(model, batch_size, start)

    def _batches(self, model, batch_size, start):
        for first in range(start * batch_size, len(self.x), batch_size):
            x = check_input(model, self.x[first:first + batch_size])
            yield Batch(np.arange(first, first + len(x), dtype=np.int64), x, [])

    def pixels(self, source, model, ids):
        return display_pixels(model, check_input(model, self.x[ids]))


class _Dataset:
    """A tf.data.Dataset of model input, rebatched to the batch size asked for."""

    def __init__(self, dataset, tuples, batched):
        self.dataset, self.tuples, self.batched = dataset, tuples, batched

    def batches(self, source, model, batch_size, start):
        _model_size(model)
        return self._batches(source, model, batch_size, start)

    def _batches(self, source, model, batch_size, start):
        dataset = self.dataset.map(lambda *element: element[0]) if self.tuples else self.dataset
        dataset = dataset.unbatch() if self.batched else dataset
        dataset = dataset.batch(batch_size).skip(start).prefetch(tf.data.AUTOTUNE)
        first = start * batch_size
        expected = None if source.names is None else len(source.names)
        for x in dataset.as_numpy_iterator():
            if expected is not None and first + len(x) > expected:
                raise KvisError(f"{source.description} yields more images than its "
                                f"{expected:,} labels")
            yield Batch(np.arange(first, first + len(x), dtype=np.int64), check_input(model, x), [])
            first += len(x)
        if expected is not None and first < expected:
            raise KvisError(f"{source.description} yielded {first:,} images for {expected:,} "
                            "labels")

    def pixels(self, source, model, ids):
        wanted = {int(i) for i in ids}
        found = {}
        for batch in self.batches(source, model, 256, 0):
            for i in wanted.intersection(batch.ids.tolist()):
                found[i] = batch.x[i - batch.ids[0]]
            if len(found) == len(wanted):
                break
        missing = sorted(wanted - set(found))
        if missing:
            raise KvisError(f"image id {missing[0]} is out of range for {source.description} "
                            f"(it yields fewer images)")
        return display_pixels(model, np.stack([found[int(i)] for i in ids]))


# Helpers ------------------------------------------------------------------------------------


def _fit(pixels, shape):
    """Pixels as `read_image` fits them to a model's size and channels, with flags saying what
    it changed (its per-image warnings are summarised per source instead)."""
    size, channels = tuple(shape[:2]), shape[2]
    flags = (_RESIZED if pixels.shape[:2] != size else 0) | \
        (_CONVERTED if (3 if pixels.shape[-1] == 4 else pixels.shape[-1]) != channels else 0)
    return read_image(pixels, size=size, channels=channels, warn=False), flags


def _model_size(model):
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise KvisError(f"model {model.name!r} does not take images (N, H, W, C); its input "
                        f"shape is {shape}")
    height, width, channels = shape[1:]
    return (None if height is None or width is None else (height, width)), channels


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


def _read_idx(path, magic):
    """An IDX file of unsigned bytes as a uint8 array: memory-mapped, or read in full when it
    is gzipped."""
    kind = "images" if magic == IDX_IMAGES else "labels"
    dims = magic & 0xFF
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            header = f.read(4 + 4 * dims)
            found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
            if found != magic:
                shown = "none" if found is None else f"0x{found:08X}"
                raise KvisError(f"{path} is not an IDX {kind} file (magic number {shown}; "
                                f"expected 0x{magic:08X})")
            shape = tuple(int.from_bytes(header[4 + 4 * d:8 + 4 * d], "big")
                          for d in range(dims))
            data = f.read() if gzipped else None
    except (OSError, EOFError) as error:
        raise KvisError(f"cannot read {path}: {error}") from None
    size = int(np.prod(shape))
    available = len(data) if gzipped else path.stat().st_size - len(header)
    if len(header) < 4 + 4 * dims or available < size:
        raise KvisError(f"{path} is truncated: its header announces {kind} of shape {shape}")
    if gzipped:
        return np.frombuffer(data, np.uint8, size).reshape(shape)
    return np.memmap(path, np.uint8, mode="r", offset=len(header), shape=shape)


def _idx_labels_path(path):
    """The labels file beside an IDX images file: t10k-images-idx3-ubyte[.gz] ->
    t10k-labels-idx1-ubyte[.gz] (either compression), or None."""
    stem = path.name.removesuffix(".gz")
    name = stem.replace("images", "labels").replace("idx3", "idx1")
    if name == stem:
        return None
    return next((candidate for candidate in (path.with_name(name), path.with_name(name + ".gz"))
                 if candidate.is_file()), None)
