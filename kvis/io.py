"""Writing outputs atomically: an interrupted run never leaves a half-written file."""

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def write_atomically(path, write):
    """Call `write(temporary_path)`, then move the result to `path` in one step.

    The temporary file sits beside `path` with the same suffix, so writers that pick a
    format from the suffix work; on any error it is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_image(path, pixels):
    """Write uint8 pixels (H, W, 3) RGB or (H, W, 1) gray atomically; format by suffix."""
    bgr = pixels[..., ::-1] if pixels.shape[-1] == 3 else pixels
    write_atomically(path, lambda temporary: cv2.imwrite(temporary, np.ascontiguousarray(bgr)))


def save_figure(figure, path, *, dpi=120):
    """Save a matplotlib Figure atomically; the format follows the suffix of `path`."""
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=dpi))
