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

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.progress import progress_bar

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


def run_batches(step, inputs, *, count=None, batch_size=32, desc="batches", progress=True):
    """Run `step` over rows of input a batch at a time and concatenate its outputs.

    Args:
        step: a callable taking one tensor per input array (first dimension the batch) and
            returning a tensor, a tuple of tensors or a dict of tensors, each with the batch
            first.
        inputs: a tuple of NumPy arrays with the same first dimension N, or a callable
            `make(rows) -> tuple of arrays` that makes the inputs of the rows in the slice
            `rows` (then `count` gives N), so that only one batch of inputs exists at a time.
        count: the number of rows, with a callable `inputs`.
        batch_size: rows per call.
        desc: what the progress bar says.
        progress: show progress (see `kvis.core.progress`).

    Returns:
        NumPy arrays in the structure `step` returns, each with N rows.
    """
    if callable(inputs):
        make = inputs
    else:
        count = len(inputs[0])
        make = lambda rows: tuple(array[rows] for array in inputs)  # noqa: E731
    parts = [output for _, output in stream_batches(step, count, make, batch_size=batch_size,
                                                    desc=desc, progress=progress)]
    return tf.nest.map_structure(lambda *p: p[0] if len(p) == 1 else np.concatenate(p), *parts)


def stream_batches(step, count, make, *, batch_size=32, desc="batches", progress=True):
    """Make `count` rows of input a batch at a time, run `step` on each batch, and yield
    `(rows, outputs)`: the slice of rows and `step`'s outputs for them as NumPy arrays.

    Only one batch of inputs exists at a time, so memory does not grow with `count`. Every
    batch has the same size, min(batch_size, count): the last one is padded by repeating its
    final row and the padding is dropped from the outputs. Every row then runs through the
    same kernels, since backends pick kernels by batch size.

    Args:
        step: as for `run_batches`.
        count: the number of rows.
        make: `make(rows) -> tuple of arrays`, the inputs of the rows in the slice `rows`.
        batch_size: rows per call.
        desc, progress: as for `run_batches`.

    Raises:
        KvisError: a batch size below 1.
    """
    if batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    size = min(batch_size, count)
    with progress_bar(-(-count // size), desc, progress=progress) as bar:
        for start in range(0, count, size):
            rows = slice(start, min(start + size, count))
            batch = [_padded(np.asarray(array), size) for array in make(rows)]
            output = step(*(tf.constant(b) for b in batch))
            kept = rows.stop - start
            yield rows, tf.nest.map_structure(lambda t, kept=kept: t.numpy()[:kept], output)
            bar.update(1)


def rows_within(model, memory_mb, *, batch_size=None):
    """Rows per pass so that one pass's activations (every layer, float32, kept for a
    backward pass) fit `memory_mb`; at most `batch_size` when given, at least 1.

    Raises:
        KvisError: a budget that is not positive.
    """
    if memory_mb is None or memory_mb <= 0:
        raise KvisError(f"memory_mb must be a positive number of MiB; got {memory_mb}")
    if batch_size is not None and batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    floats = sum(int(np.prod(node.output.shape[1:])) for node in model_graph(model).nodes.values()
                 if not node.is_container and hasattr(node.output, "shape"))
    rows = max(1, int(memory_mb * 2 ** 20 // (4 * max(floats, 1))))
    return rows if batch_size is None else max(1, min(rows, batch_size))


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
