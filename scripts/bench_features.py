"""Benchmark `kvis.feature_maps` against the compiled call of the same probe.

For one image on ResNet50 (random weights) at every spatial layer, three ways to the same
arrays, each timed as the best of several calls after a warm-up:
- `probe.predict(x)`: Keras's predict, which traces a new function on every call;
- a `tf.function` of the probe, traced once, called directly (the bound);
- `kvis.feature_maps(model, x)`: the compiled pass from `kvis.runner`, with the result type.

Usage: python scripts/bench_features.py [--repeats 5] [--model resnet50]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarking import machine, seconds  # noqa: E402

import kvis  # noqa: E402

MODELS = {"resnet50": keras.applications.ResNet50, "vgg16": keras.applications.VGG16}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = MODELS[args.model](weights=None)
    paths = kvis.spatial_layers(model)
    x = np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32)
    probe = kvis.probe(model, paths)
    direct = tf.function(lambda batch: probe(batch, training=False),
                         input_signature=[tf.TensorSpec((None, 224, 224, 3))])

    ways = {
        "probe.predict": lambda: probe.predict(x, verbose=0),
        "compiled tf.function call": lambda: {k: v.numpy() for k, v in direct(x).items()},
        "kvis.feature_maps": lambda: kvis.feature_maps(model, x, progress=False),
    }
    reference = ways["compiled tf.function call"]()
    result = ways["kvis.feature_maps"]()
    worst = max(float(np.abs(result[p] - reference[p]).max()) for p in paths)
    print(f"{machine()}; {args.model}, {len(paths)} spatial layers, one image; "
          f"largest difference to the compiled call: {worst:.3g}")
    times = {}
    for name, way in ways.items():
        way()  # warm up: tracing, caches
        times[name] = min(seconds(way) for _ in range(args.repeats))
    bound = times["compiled tf.function call"]
    for name, spent in times.items():
        print(f"{name:28} {1000 * spent:8.1f} ms   speed {bound / spent:5.2f} of the compiled call")


if __name__ == "__main__":
    main()
