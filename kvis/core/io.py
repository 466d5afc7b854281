"""Writing outputs atomically: an interrupted run never leaves a half-written file."""

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from kvis.core.errors import KvisError

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def write_atomically(path, write):
    """Call `write(temporary_path)`, then move the result to `path` in one step.

    The temporary file sits beside `path` with the same suffix, so writers that pick a
    format from the suffix work; on any error it is removed and `path` is left untouched.

    Raises:
        KvisError: `path` cannot be written (the message names `path` and the cause).
    """
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # as an ordinary new file, not mkstemp's 0600
        os.replace(temporary, path)
    except OSError as error:
        raise KvisError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def check_writable(path):
    """Raise KvisError now, before any work, if a file cannot be written at `path`. Nothing is
    left behind: the folders the check makes are removed again (writing makes them)."""
    missing = [folder for folder in Path(path).parents if not folder.exists()]  # deepest first
    try:
        Path(_temporary_beside(Path(path))).unlink()
    finally:
        for folder in missing:
            if folder.is_dir():
                folder.rmdir()


def _temporary_beside(path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                         suffix=path.suffix)
    except OSError as error:
        raise KvisError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(fd)
    return temporary


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_image(path, pixels):
    """Write uint8 pixels (H, W, 3) RGB or (H, W, 1) gray atomically; format by suffix."""
    bgr = pixels[..., ::-1] if pixels.shape[-1] == 3 else pixels

    def write(temporary):
        if not cv2.imwrite(temporary, np.ascontiguousarray(bgr)):
            raise OSError(f"OpenCV cannot write {Path(path).suffix or 'this'} files")

    write_atomically(path, write)


def save_figure(figure, path, *, dpi=120):
    """Save a matplotlib Figure atomically; the format follows the suffix of `path`."""
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=dpi))


def write_arrays(path, arrays):
    """Write named arrays to an .npz file atomically (`np.savez`, uncompressed). Its zip
    entries carry no time of writing (`zipfile.ZipFile.open` dates them 1980-01-01), so the
    same arrays give the same bytes.

    Args:
        path: the file, ending in .npz.
        arrays: {name: array-like}; numbers, strings and arrays of them, so that
            `np.load(path, allow_pickle=False)` reads every one back. A name may hold "/"
            ("grad-cam/maps").

    Raises:
        KvisError: an array of Python objects (it would need pickle), or `path` cannot be
            written.
    """
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    if objects := [name for name, value in arrays.items() if value.dtype == object]:
        raise KvisError(f"cannot write {path}: {objects[0]!r} holds Python objects, not numbers "
                        "or strings")
    write_atomically(path, lambda temporary: np.savez(temporary, **arrays))


def write_result(path, result, *, params=None, shared=()):
    """Write a result dataclass to an .npz file atomically, as named arrays and a JSON string.

    Each array field is an array under its name ("maps", "pixels", "classes"...), a list of
    strings a string array ("names"), a mapping of arrays one array per key ("maps/block1_conv1");
    the other fields that are not None (the layer, the method, the score...) join `params`,
    written as the JSON string "params": `json.loads(str(np.load(path)["params"]))`.

    Args:
        path: the file, ending in .npz.
        result: a dataclass of NumPy arrays (an `Explanation`, `FeatureMaps`, ...), or
            {name: result} for several results of the same images: the fields named in
            `shared` are written once, from the first, the others as "name/field".
        params: more parameters (the options of a command); a result field of the same name
            replaces one.
        shared: see `result`.

    Raises:
        KvisError: as `write_arrays`.
    """
    results = result if isinstance(result, dict) else {"": result}
    arrays, found = {}, dict(params or {})
    first = next(iter(results.values()))
    for field in shared:
        _store(field, getattr(first, field), arrays, found)
    for name, each in results.items():
        for field in dataclasses.fields(each):
            if field.name not in shared:
                _store(f"{name}/{field.name}" if name else field.name,
                       getattr(each, field.name), arrays, found)
    arrays["params"] = json.dumps(_plain(found))
    write_arrays(path, arrays)


def _store(key, value, arrays, params):
    """Put one result field among the arrays, or among the parameters (None: nowhere)."""
    if value is None:
        return
    if isinstance(value, np.ndarray):
        arrays[key] = value
    elif isinstance(value, Mapping) and all(isinstance(v, np.ndarray) for v in value.values()):
        arrays.update({f"{key}/{name}": v for name, v in value.items()})
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        arrays[key] = np.array(value, dtype=str)
    else:
        params[key] = value


def _plain(value):
    """`value` with NumPy numbers and arrays, tuples, paths and non-string keys made JSON's."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return str(value) if isinstance(value, Path) else value
