"""Compiled passes: cached once per model where they can be, and quiet where kvis compiles a
fresh `tf.function` per call (each optimization has its own variables), since TensorFlow
would warn about retracing on every repeated call."""

import contextlib
import logging
import weakref

import tensorflow as tf

_compiled = weakref.WeakKeyDictionary()


def compiled(model, key, build):
    """The `tf.function` `build()` returns, traced once per model and key, and cached.

    The cache holds the model weakly, so it does not keep the model alive. The function
    reads the model's variables, so later weight changes are seen.
    """
    functions = _compiled.setdefault(model, {})
    if key not in functions:
        function = build()
        with quiet_retracing():
            function.get_concrete_function()
        functions[key] = function
    return functions[key]


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


class _DropRetracingWarning(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()
