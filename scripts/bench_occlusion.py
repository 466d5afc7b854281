"""Benchmark occlusion sensitivity against the model's own forward throughput.

Occluder positions per second, next to the throughput of the model's compiled forward pass at
the same batch size, in one run; and peak memory for a growing number of positions, which the
memory budget (not the number of positions) should bound.

Usage: python scripts/bench_occlusion.py [--models demo vgg16]
"""

import argparse
import os
import resource

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarking import machine, seconds  # noqa: E402

import kvis  # noqa: E402
from kvis.analyses.occlusion import _batch_size, occlusion  # noqa: E402

# model: (occluder size, stride, memory budget in MB); VGG16: 14x14 = 196 positions at 224 px
CASES = {"demo": (6, 2, 64), "vgg16": (32, 14, 1024)}


def forward_throughput(model, batch, repeats):
    """Images/s of the model's compiled forward pass at this batch size."""
    x = tf.random.uniform((batch,) + tuple(model.input_shape[1:]))
    forward = tf.function(lambda x: model(x, training=False))
    forward(x).numpy()
    return batch / min(seconds(lambda: forward(x).numpy()) for _ in range(repeats))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(machine())
    for name in args.models:
        bench(name, args.repeats)


def bench(name, repeats):
    size, stride, budget = CASES[name]
    model = kvis.load_model(name, weights=None if name != "demo" else "imagenet")
    x = np.random.default_rng(0).uniform(0, 1, (1,) + model.input_shape[1:]).astype(np.float32)

    def run(stride=stride):
        return occlusion(model, x, size=size, stride=stride, memory_mb=budget, progress=False)

    positions = run().scores.size
    batch = min(_batch_size(model, budget), positions)
    speed = positions / min(seconds(run) for _ in range(repeats))
    reference = forward_throughput(model, batch, repeats)
    print(f"\n{name}: {positions} positions (occluder {size}, stride {stride}), "
          f"batch {batch} from a {budget} MB budget")
    print(f"  occlusion {speed:.1f} positions/s; model forward {reference:.1f} images/s "
          f"at batch {batch}: {speed / reference:.0%}")
    for finer in (stride, max(1, stride // 2)):
        count = run(stride=finer).scores.size
        print(f"  {count:6d} positions: peak process memory {peak_rss_mb():.0f} MB", flush=True)


if __name__ == "__main__":
    main()
