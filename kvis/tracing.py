"""Quiet tracing: where kvis compiles a fresh `tf.function` per call (each optimization has
its own variables), TensorFlow would warn about retracing on every repeated call."""

import contextlib
import logging

import tensorflow as tf


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
