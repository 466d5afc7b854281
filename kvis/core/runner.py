"""The one batched runner: compiled passes cached per model, run over images a batch at a time,
with progress.

A compiled pass is a `tf.function` traced once per model and key (tracing a large model costs
more than a batch) and kept in a cache that holds the model weakly. It reads the model's
variables, so later weight changes are seen. `run_batches` feeds it equal-sized batches of
per-image arrays and concatenates what it returns.

One switch, `jit_compile`, compiles every pass with XLA: score passes, probes, the scan,
dissection, the explicit deconvnet, the maximization and inversion steps. A pass with an op XLA
cannot compile runs without it, after one warning.
"""

import contextlib
import logging
import re
import threading
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.progress import progress_bar

_compiled = weakref.WeakKeyDictionary()
_floats_per_row = weakref.WeakKeyDictionary()
_lock = threading.RLock()
_jit = False  # the switch, process-wide as Keras's own settings are
# How TensorFlow says that XLA cannot compile an op of a graph (errors of the computation itself,
# such as a bad reshape, are raised as they are).
_NOT_COMPILABLE = re.compile(r"Detected unsupported operations|must be a compile-time constant")


def jit_compile(enabled=True):
    """Compile every pass built from now on with XLA (`tf.function(jit_compile=True)`), or not.

    Called alone, it sets the switch for the process; in a `with` statement, for the block
    only (the previous value comes back on leaving it). Passes are cached per setting, so
    switching never reuses a pass compiled the other way. XLA fuses ops: usually faster on a
    GPU, on a CPU it depends on the model (docs/performance.md#xla).

    Args:
        enabled: compile with XLA.

    Returns:
        A context manager that restores the previous setting on exit.

    Example:
        >>> with jit_compile():
        ...     result = kvis.saliency(model, images)
    """
    global _jit
    previous, _jit = _jit, bool(enabled)
    return _Restore(previous)


def jit_compile_enabled():
    """Whether passes built now are compiled with XLA (see `jit_compile`)."""
    return _jit


def compiled(model, key, build):
    """The `tf.function` `build(jit_compile)` returns, traced once per model, key and XLA
    setting, and cached.

    `build` takes whether to compile with XLA and must return a `tf.function` with an input
    signature made with `jit_compile=` that value. With XLA on, a pass whose ops XLA cannot
    compile is rebuilt without it on its first call, with one warning. The cache holds the
    model weakly, so it does not keep the model alive; it is safe to use from several threads.

    Args:
        model: the Keras model the pass runs.
        key: what tells this pass from the model's others (hashable), or None for a pass
            built for one call and not cached.
        build: `build(jit_compile) -> tf.function`.

    Returns:
        The pass, a callable like the `tf.function`.
    """
    jit = jit_compile_enabled()
    if key is None:
        return _traced(_XlaOrPlain("a pass", build) if jit else build(False))
    with _lock:
        functions = _compiled.setdefault(model, {})
        if (key, jit) not in functions:
            name = key[0] if isinstance(key, tuple) else key
            functions[key, jit] = _traced(_XlaOrPlain(name, build) if jit else build(False))
        return functions[key, jit]


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

    Only one batch of inputs exists at a time, so memory does not grow with `count`. The
    rows go in the fewest batches of at most `batch_size`, all of one size (as even as they
    go: 16 rows at 7 are three batches of 6); the last one is padded by repeating its final
    row and the padding is dropped from the outputs. Every row then runs through the
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
    size = -(-count // -(-count // batch_size))  # the fewest batches, as even as they go
    with progress_bar(-(-count // size), desc, progress=progress) as bar:
        for start in range(0, count, size):
            rows = slice(start, min(start + size, count))
            batch = [_padded(np.asarray(array), size) for array in make(rows)]
            output = step(*(tf.constant(b) for b in batch))
            kept = rows.stop - start
            yield rows, tf.nest.map_structure(lambda t, kept=kept: _array(t)[:kept], output)
            bar.update(1)


def rows_within(model, memory_mb, *, batch_size=None):
    """Rows per pass so that what one pass holds per row fits `memory_mb`: the tensors a
    backward pass to the input keeps (`floats_per_row`), float32; at most `batch_size` when
    given, at least 1.

    Raises:
        KvisError: a budget that is not positive.
    """
    if memory_mb is None or memory_mb <= 0:
        raise KvisError(f"memory_mb must be a positive number of MiB; got {memory_mb}")
    if batch_size is not None and batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    rows = max(1, int(memory_mb * 2 ** 20 // (4 * max(floats_per_row(model), 1))))
    return rows if batch_size is None else max(1, min(rows, batch_size))


def floats_per_row(model):
    """The floats one input row makes a pass hold: the tensors a backward pass to the input
    keeps (a rectifier's output; both sides of any other nonlinear layer; nothing for a
    layer whose input gradient is a fixed linear map at inference, such as a convolution
    without activation, batch normalization or an addition), plus the largest output (the
    gradient in flight). A forward-only pass holds less. Counted once per model, as its graph
    is replayed once."""
    if model not in _floats_per_row:
        _floats_per_row[model] = _count_floats(model)
    return _floats_per_row[model]


def _count_floats(model):
    kept, largest = {}, 0
    for node in model_graph(model).nodes.values():
        if not node.is_container and hasattr(node.output, "shape"):
            kept.update(_kept(node))
            largest = max(largest, _floats(node.output))
    return sum(kept.values()) + largest


# Layers whose input gradient is a fixed linear map at inference, without an activation.
_LINEAR = (keras.layers.BatchNormalization, keras.layers.Add, keras.layers.Subtract,
           keras.layers.Average, keras.layers.Rescaling, keras.layers.Normalization,
           keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
           keras.layers.AlphaDropout, keras.layers.ZeroPadding2D, keras.layers.Cropping2D,
           keras.layers.Reshape, keras.layers.Flatten, keras.layers.Permute,
           keras.layers.Concatenate, keras.layers.AveragePooling2D,
           keras.layers.GlobalAveragePooling2D, keras.layers.Identity, keras.layers.InputLayer,
           keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
           keras.layers.Dense)
_RECTIFIERS = ("relu", "relu6", "leaky_relu")


def _kept(node):
    """{key: floats per row} of the tensors one layer call makes a backward pass keep."""
    layer, output = node.layer, node.output
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if isinstance(layer, keras.layers.ReLU) or activation in _RECTIFIERS:
        return {id(output): _floats(output)}
    if isinstance(layer, _LINEAR):  # with a fused nonlinearity: its input and output
        return {} if activation == "linear" else {id(output): _floats(output),
                                                  (id(output), "inside"): _floats(output)}
    return {id(t): _floats(t) for t in (*node.inputs, output) if hasattr(t, "shape")}


def _floats(tensor):
    return int(np.prod(tensor.shape[1:]))


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


def _traced(function):
    with quiet_retracing():
        function.get_concrete_function()
    return function


class _XlaOrPlain:
    """A pass compiled with XLA that turns, for good, into its plain build the first time XLA
    cannot compile it (an op without an XLA kernel on this device, a `py_function`)."""

    def __init__(self, name, build):
        self.name, self.build = name, build
        self.function, self.plain = build(True), False

    def __getattr__(self, name):  # the rest of the tf.function's interface
        return getattr(self.function, name)

    def __call__(self, *args, **kwargs):
        try:
            return self.function(*args, **kwargs)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            if self.plain or not _NOT_COMPILABLE.search(str(error)):
                raise
            ops = sorted(set(re.findall(r"No registered '(\w+)' OpKernel", str(error))))
            warnings.warn(f"XLA cannot compile {self.name} ({', '.join(ops) or 'an op'}): it "
                          "runs without XLA", stacklevel=2)
            self.function, self.plain = _traced(self.build(False)), True
            return self.function(*args, **kwargs)


class _Restore:
    """Puts the XLA switch back at the end of a `with jit_compile(...)` block."""

    def __init__(self, previous):
        self.previous = previous

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        jit_compile(self.previous)


def _array(tensor):
    """A pass's output tensor as a writeable NumPy array. On the CPU it shares the tensor's
    buffer, which it keeps alive, where `.numpy()` would copy it (measured: a third of the
    demo model's feature-map time); the tensor is the pass's own, so nothing else sees it."""
    return tensor._numpy()


def _padded(array, size):
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


class _DropRetracingWarning(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()
