"""Benchmark the attention methods against the model's own forward+backward throughput.

For a batch of images, each method's images/s is printed next to the throughput of one
compiled forward and backward pass of the whole model (the gradient of one class score with
respect to the input), in one run on this machine. Grad-CAM and saliency cost about one such
pass per image; SmoothGrad and Integrated Gradients one per sample; Score-CAM one forward
pass per channel of the explained layer.

Usage: python scripts/bench_attention.py [--models demo vgg16] [--batch 16]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarking import machine, seconds  # noqa: E402

import kvis  # noqa: E402
from kvis.vocabulary import ATTENTION_METHODS  # noqa: E402

BATCHES = {"demo": 64, "vgg16": 4}
SLOW = ("score-cam", "smoothgrad", "integrated-gradients")  # many passes per image: timed once


def model_throughput(model, x, repeats):
    """Images/s of a compiled forward+backward pass (input gradient of the top class)."""
    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            total = tf.reduce_sum(tf.reduce_max(model(batch, training=False), axis=-1))
        return tape.gradient(total, batch)

    step(tf.constant(x)).numpy()
    return len(x) / min(seconds(lambda: step(tf.constant(x)).numpy()) for _ in range(repeats))


def method_throughput(model, x, method, repeats):
    """Images/s of one attention method (after a first call that compiles)."""
    def explain(images):
        return kvis.attention(model, images, method, batch_size=len(x), progress=False)

    explain(x[:1])
    return len(x) / min(seconds(lambda: explain(x)) for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BATCHES), choices=list(BATCHES))
    parser.add_argument("--batch", type=int, help="images per batch (default: per model)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(machine())
    for name in args.models:
        model = kvis.load_model(name, weights=None if name != "demo" else "imagenet")
        batch = args.batch or BATCHES[name]
        x = np.random.default_rng(0).uniform(0, 1, (batch,) + model.input_shape[1:])
        x = x.astype(np.float32)
        reference = model_throughput(model, x, args.repeats)
        print(f"\n{name}, batch {batch}: model forward+backward {reference:.1f} images/s")
        print(f"{'method':20} {'images/s':>9} {'fraction of fwd+bwd':>20}")
        for method in ATTENTION_METHODS:
            speed = method_throughput(model, x, method, 1 if method in SLOW else args.repeats)
            print(f"{method:20} {speed:9.2f} {speed / reference:20.1%}", flush=True)


if __name__ == "__main__":
    main()
