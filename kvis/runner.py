"""The one batched runner: compiled passes cached per model, run over images a batch at a time,
with progress.

A compiled pass is a `tf.function` traced once per model and key (tracing a large model costs
more than a batch) and kept in a cache that holds the model weakly. It reads the model's
variables, so later weight changes are seen. `run_batches` feeds it equal-sized batches of
per-image arrays and concatenates what it returns.
"""

import contextlib
import logging
import threading
import weakref

import numpy as np
import tensorflow as tf

from kvis.errors import KvisError
from kvis.progress import progress_bar

_compiled = weakref.WeakKeyDictionary()
_lock = threading.RLock()


def compiled(model, key, build):
    """The `tf.function` `build()` returns, traced once per model and key, and cached.

    `build` must return a `tf.function` with an input signature. The cache holds the model
    weakly, so it does not keep the model alive; it is safe to use from several threads.
    """
    with _lock:
        functions = _compiled.setdefault(model, {})
        if key not in functions:
            function = build()
            with quiet_retracing():
                function.get_concrete_function()
            functions[key] = function
        return functions[key]


def run_batches(step, arrays, *, batch_size=32, desc="batches", progress=True):
    """Run `step` over per-image arrays a batch at a time and concatenate its outputs.

    Every batch has the same size, min(batch_size, N): the last one is padded by repeating its
    final row and the padding is dropped from the outputs. An image then gives bitwise the
    same outputs wherever it sits, since backends pick kernels by batch size.

    Args:
        step: a callable taking one tensor per array (first dimension the batch) and returning
            a tensor, a tuple of tensors or a dict of tensors, each with the batch first.
        arrays: a tuple of NumPy arrays with the same first dimension N.
        batch_size: rows per call.
        desc: what the progress bar says.
        progress: show progress (see `kvis.progress`).

    Returns:
        NumPy arrays in the structure `step` returns, each with N rows.
    """
    if batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    count = len(arrays[0])
    size = min(batch_size, count)
    parts = []
    with progress_bar(-(-count // size), desc, progress=progress) as bar:
        for start in range(0, count, size):
            batch = [_padded(array[start:start + size], size) for array in arrays]
            output = step(*(tf.constant(b) for b in batch))
            kept = min(size, count - start)
            parts.append(tf.nest.map_structure(lambda t, kept=kept: t.numpy()[:kept], output))
            bar.update(1)
    return tf.nest.map_structure(lambda *p: p[0] if len(p) == 1 else np.concatenate(p), *parts)


@contextlib.contextmanager
def quiet_retracing():
    """Within the block, drop TensorFlow's 'triggered tf.function retracing' warnings."""
    logger = tf.get_logger()
    quiet = _DropRetracingWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _padded(array, size):
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


class _DropRetracingWarning(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()
