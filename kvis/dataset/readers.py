"""How each kind of image source is read a batch at a time for a model: decoded files and
IDX/demo pixels (fitted to the model's size and channels and preprocessed in tf.data's threads),
arrays of model input, and `tf.data.Dataset`s; and the IDX file format.

`kvis.dataset.sources.image_source` picks the reader; nothing here holds a whole folder or IDX
file as float arrays: a batch is made when it is needed.
"""

import gzip
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.images import check_input, display_pixels, read_file, read_image
from kvis.core.models import preprocessing_for

IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions: (N, rows, columns)
IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension: (N,)
_RESIZED, _CONVERTED = 1, 2


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


class DecodingReader:
    """Pixels that still need fitting to the model (size, channels) and preprocessing, read
    and prepared in tf.data's threads; subclasses say how one image's pixels are read."""

    per_image = True  # map over single ids (files: decode in parallel) or over batches of ids

    def __init__(self):
        self.warned = set()

    def raw(self, i):
        """uint8 (h, w, c) pixels of image i as stored."""
        raise NotImplementedError

    def shape(self, model):
        size, channels = model_size(model)
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
                pixels[n], flags[n] = fit_pixels(self.raw(i), shape)
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
        """Fitted as the scan that chose these ids fitted them, without a second warning:
        the scan has said what it changed."""
        shape = self.shape(model)
        unique, where = np.unique(ids, return_inverse=True)
        pixels, _, reasons = self.fitted(unique, shape)
        for i, reason in zip(unique, reasons):
            if reason:
                raise KvisError(f"cannot read image {i} ({source.names[i]}): {reason}")
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


class FileReader(DecodingReader):
    def __init__(self, paths):
        super().__init__()
        self.paths = paths

    def raw(self, i):
        return read_file(self.paths[int(i)])[0]


class PixelReader(DecodingReader):
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
        size, channels = model_size(model)
        return (*(size or self.stored.shape[1:3]), channels)


class ArrayReader:
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


class DatasetReader:
    """A tf.data.Dataset of model input, rebatched to the batch size asked for."""

    def __init__(self, dataset, tuples, batched):
        self.dataset, self.tuples, self.batched = dataset, tuples, batched

    def batches(self, source, model, batch_size, start):
        model_size(model)
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


def fit_pixels(pixels, shape):
    """Pixels as `read_image` fits them to a model's size and channels, with flags saying what
    it changed (its per-image warnings are summarised per source instead)."""
    size, channels = tuple(shape[:2]), shape[2]
    flags = (_RESIZED if pixels.shape[:2] != size else 0) | \
        (_CONVERTED if (3 if pixels.shape[-1] == 4 else pixels.shape[-1]) != channels else 0)
    return read_image(pixels, size=size, channels=channels, warn=False), flags


def model_size(model):
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise KvisError(f"model {model.name!r} does not take images (N, H, W, C); its input "
                        f"shape is {shape}")
    height, width, channels = shape[1:]
    return (None if height is None or width is None else (height, width)), channels


def read_idx(path, magic):
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


def idx_labels_path(path):
    """The labels file beside an IDX images file: t10k-images-idx3-ubyte[.gz] ->
    t10k-labels-idx1-ubyte[.gz] (either compression), or None."""
    stem = path.name.removesuffix(".gz")
    name = stem.replace("images", "labels").replace("idx3", "idx1")
    if name == stem:
        return None
    return next((candidate for candidate in (path.with_name(name), path.with_name(name + ".gz"))
                 if candidate.is_file()), None)
