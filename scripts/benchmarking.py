"""Shared helpers of the benchmark scripts (run them from the repository root)."""

import time

import tensorflow as tf


def seconds(work):
    """Wall-clock seconds that `work()` takes."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def machine():
    """One line naming TensorFlow's version and the devices it sees."""
    devices = ", ".join(d.device_type for d in tf.config.list_logical_devices())
    return f"TensorFlow {tf.__version__}, devices: {devices}"
