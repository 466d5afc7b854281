"""Benchmark the dataset scan against the model's own forward throughput, and its memory.

Images per second of `kvis.scan` over Fashion-MNIST IDX files (the demo model, reading and
decoding included) and over an array (VGG16, random weights), next to the throughput of the
same model's compiled forward pass over the same images held in memory, in batches of the
same size, in one run. Then
peak memory of scans of 1,000 and 20,000 images, each in a fresh process: it should be flat.

Needs the Debian package `dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist).

Usage: python scripts/bench_topk.py [--data /usr/share/datasets/fashion-mnist] [--skip-vgg16]
"""

import argparse
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarking import machine, seconds  # noqa: E402

import kvis  # noqa: E402
from kvis.datasets import image_source  # noqa: E402

BATCH = 64


def forward_throughput(model, x, repeats=2):
    """Images/s of the model's compiled forward pass over images already in memory, in
    batches of `BATCH`: the speed limit of a scan of the same images."""
    forward = tf.function(lambda batch: model(batch, training=False))
    forward(tf.constant(x[:BATCH])).numpy()

    def run():
        for start in range(0, len(x), BATCH):
            forward(tf.constant(x[start:start + BATCH])).numpy()

    return len(x) / min(seconds(run) for _ in range(repeats))


def scan_throughput(model, data, layers, count, repeats=2):
    """Images/s of `kvis.scan` (best of `repeats` after a warm-up that traces it)."""
    kvis.scan(model, data, layers, k=9, batch_size=BATCH, progress=False)

    def run():
        assert kvis.scan(model, data, layers, k=9, batch_size=BATCH,
                         progress=False).images == count

    return count / min(seconds(run) for _ in range(repeats))


def peak_memory(data, count):
    """Peak resident memory (MB) of a fresh process that scans the first `count` images (its
    VmHWM: `ru_maxrss` would report the parent's peak, which survives the exec)."""
    code = (
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "import kvis\n"
        "from kvis.datasets import image_source\n"
        f"model = kvis.load_model('demo')\n"
        f"source = image_source({str(data)!r})\n"
        f"batches = source.batches(model, batch_size={BATCH})\n"
        "from kvis.dataset_scan import batch_runner, empty_scan, scan_layers\n"
        "paths = scan_layers(model, ['block2_conv2', 'block3_conv1'])\n"
        "state, run = empty_scan(model, paths, 9, source), batch_runner(model, paths, 9)\n"
        f"for batch in batches:\n"
        f"    if state.images >= {count}: break\n"
        "    state = run(state, batch)\n"
        "batches.close()\n"
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "print(int(peak[0].split()[1]) / 1024, state.images)\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    return float(output[0]), int(output[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--skip-vgg16", action="store_true")
    options = parser.parse_args()
    print(machine(), f"; batch {BATCH}, k 9")
    test_images = os.path.join(options.data, "t10k-images-idx3-ubyte.gz")
    train_images = os.path.join(options.data, "train-images-idx3-ubyte.gz")

    demo = kvis.load_model("demo")
    layers = ["block1_conv2", "block2_conv2", "block3_conv1"]
    in_memory = np.concatenate([batch.x for batch in image_source(test_images).batches(
        demo, batch_size=BATCH)])
    limit = forward_throughput(demo, in_memory)
    rate = scan_throughput(demo, test_images, layers, 10000)
    print(f"demo, 10,000 Fashion-MNIST test images from IDX, 3 layers: scan {rate:,.0f} "
          f"images/s, forward {limit:,.0f} images/s: {rate / limit:.0%}")

    if not options.skip_vgg16:
        vgg16 = kvis.load_model("vgg16", weights=None)
        x = np.random.default_rng(0).uniform(-120, 150, (256, 224, 224, 3)).astype(np.float32)
        limit = forward_throughput(vgg16, x, repeats=1)
        rate = scan_throughput(vgg16, x, ["block3_conv3", "block5_conv3"], 256, repeats=1)
        print(f"vgg16, 256 images of 224 px from an array, 2 layers: scan {rate:,.1f} "
              f"images/s, forward {limit:,.1f} images/s: {rate / limit:.0%}")

    for count in (1000, 20000):
        megabytes, scanned = peak_memory(train_images, count)
        print(f"peak memory scanning {scanned:,} images: {megabytes:,.0f} MB")
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")


if __name__ == "__main__":
    main()
