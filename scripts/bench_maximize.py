"""Benchmark activation maximization against the least work one step must do.

For K filters optimized at once, one engine step costs at least a forward and a backward pass
(to the input) of the model cut at the target layer, for a batch of K. This script times both
in one run on this machine, compiled, and prints the engine's throughput as a fraction of
that bound. The engine's step time is the difference between two runs of different lengths,
which cancels tracing and setup.

Usage: python scripts/bench_maximize.py [--models demo vgg16] [--ks 1 16 64] [--xla]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarking import machine, seconds  # noqa: E402

import kvis  # noqa: E402
from kvis.engine import default_settings  # noqa: E402

# model: (layer, steps of the short run, steps of the long run, best of how many repeats)
CASES = {"demo": ("block2_conv2", 16, 144, 3), "vgg16": ("block4_conv1", 1, 3, 1)}


def reference_step(model, layer, k, steps, best_of):
    """Seconds for one compiled forward+backward (to the input) of the model cut at `layer`,
    batch k; `steps` of them run inside one compiled call, as the engine runs its chunks."""
    cut = keras.Model(model.input, model.get_layer(layer).output)
    x = tf.Variable(tf.random.uniform((k,) + tuple(model.input_shape[1:])))

    @tf.function
    def run():
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.reduce_mean(cut(x, training=False), axis=(1, 2))[:, :k])
            x.assign_add(1e-6 * tape.gradient(loss, x))
        return loss

    run().numpy()
    return min(seconds(lambda: run().numpy()) for _ in range(best_of)) / steps


def engine_step(model, layer, k, short, long, best_of, xla):
    """Seconds per engine step for k filters at once (difference of two runs)."""
    def run(steps):
        settings = default_settings(model, steps=steps, chunk=short, jit_compile=xla)
        return seconds(lambda: kvis.maximize_filters(model, layer, range(k), settings=settings,
                                                      progress=False))

    run(short)  # warm caches (graph replay, probe)
    return min(run(long) - run(short) for _ in range(best_of)) / (long - short)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--xla", action="store_true", help="compile the engine with XLA")
    args = parser.parse_args()

    print(f"{machine()}, engine XLA: {args.xla}")
    print(f"{'model':8} {'layer':14} {'K':>3} {'fwd+bwd ms/filter':>18} "
          f"{'engine ms/filter-step':>22} {'fraction':>9}")
    for name in args.models:
        layer, short, long, best_of = CASES[name]
        model = kvis.load_model(name, weights=None) if name != "demo" else kvis.load_model(name)
        for k in args.ks:
            bound = reference_step(model, layer, k, short, best_of)
            engine = engine_step(model, layer, k, short, long, best_of, args.xla)
            print(f"{name:8} {layer:14} {k:3d} {1000 * bound / k:18.3f} "
                  f"{1000 * engine / k:22.3f} {bound / engine:9.0%}", flush=True)


if __name__ == "__main__":
    np.random.seed(0)
    main()
