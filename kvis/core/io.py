"""Writing outputs atomically: an interrupted run never leaves a half-written file."""

import os
import tempfile
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
    """Raise KvisError now, before any work, if a file cannot be written at `path`."""
    Path(_temporary_beside(Path(path))).unlink()


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
