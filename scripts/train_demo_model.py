"""Train the kvis demo model on Fashion-MNIST and write it, with sample images, into kvis/data.

Needs the Debian package `dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist).
Usage: python scripts/train_demo_model.py [--epochs 6] [--data DIR]
"""

import argparse
import gzip
from pathlib import Path

import keras
import numpy as np

from kvis.demo import IMAGES_FILE, MODEL_FILE, build_demo_model, data_path

SAMPLES_PER_CLASS = 40


def read_idx(path):
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(folder, prefix):
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")[..., None]
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def sample_per_class(images, labels, count):
    """The first `count` images of each class, in class order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(10)])
    return images[keep], labels[keep]


def inference_copy(model):
    """The trained weights in a fresh, uncompiled model: no optimizer state in the file."""
    copy = build_demo_model()
    copy.set_weights(model.get_weights())
    return copy


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "t10k")
    model = build_demo_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train / 255.0, y_train, batch_size=128, epochs=args.epochs,
              validation_split=0.05, verbose=2)
    _, accuracy = model.evaluate(x_test / 255.0, y_test, verbose=0)
    print(f"test accuracy on all {len(y_test)} Fashion-MNIST test images: {accuracy:.4f}")

    inference_copy(model).save(data_path(MODEL_FILE))
    images, labels = sample_per_class(x_test, y_test, SAMPLES_PER_CLASS)
    np.savez_compressed(data_path(IMAGES_FILE), images=images, labels=labels)
    print(f"wrote {data_path(MODEL_FILE)}, and {len(labels)} test images to "
          f"{data_path(IMAGES_FILE)}")


if __name__ == "__main__":
    main()
