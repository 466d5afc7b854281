"""Train the kvis demo model on Fashion-MNIST and write it, with sample images, into kvis/data.

Training uses kvis's training-time views: the conv filters are held to an RMS radius
(`FilterNormConstraint`, Zeiler & Fergus section 3), a `FeatureEvolution` callback records how
feature maps of block2_conv2 and block3_conv1 evolve (Fig. 4), and `TensorBoardImages` writes
filters, feature maps and Grad-CAM of two test images to the TensorBoard log. It prints what
the callbacks cost per epoch.

Needs the Debian package `dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist).
Usage: python scripts/train_demo_model.py [--epochs 6] [--data DIR] [--out kvis/data]
           [--log-dir logs/demo] [--radius 0.5]
then:  kvis evolution logs/demo --out evolution.png;  tensorboard --logdir logs/demo
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np

import kvis
from kvis.core.demo import IMAGES_FILE, MODEL_FILE, build_demo_model, data_path
from kvis.core.models import configure_model

SAMPLES_PER_CLASS = 40


def load_split(folder, prefix):
    """Pixels uint8 (N, 28, 28, 1) and labels of one Fashion-MNIST split."""
    source = kvis.image_source(folder / f"{prefix}-images-idx3-ubyte.gz")
    model = build_demo_model()
    configure_model(model, preprocessing="none")  # pixels as they are
    images = np.concatenate([batch.x for batch in source.batches(model, batch_size=4096)])
    return images.astype(np.uint8), source.labels


def sample_per_class(images, labels, count):
    """The first `count` images of each class, in class order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:count] for c in range(10)])
    return images[keep], labels[keep]


def inference_copy(model):
    """The trained weights in a fresh, uncompiled model without the training constraint."""
    copy = build_demo_model()
    copy.set_weights(model.get_weights())
    return copy


class Timed(keras.callbacks.Callback):
    """Runs another callback and adds up the seconds its epoch ends take."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seconds = inner, 0.0

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        self.inner.on_epoch_end(epoch, logs)
        self.seconds += time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=data_path(""),
                        help="folder for the model and the sample images")
    parser.add_argument("--log-dir", type=Path, default=Path("logs/demo"))
    parser.add_argument("--radius", type=float, default=0.5,
                        help="RMS radius of the conv filters (Zeiler & Fergus used 0.1)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "t10k")
    model = build_demo_model(kvis.FilterNormConstraint(args.radius))
    configure_model(model, preprocessing="unit")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    sample = x_test[:500] / np.float32(255)
    views = [Timed(kvis.FeatureEvolution(sample, ["block2_conv2", "block3_conv1"],
                                         epochs=range(1, args.epochs + 1),
                                         log_dir=args.log_dir)),
             Timed(kvis.TensorBoardImages(sample[[0, 1]], log_dir=args.log_dir,
                                          filter_layers="block1_conv1",
                                          feature_map_layers="block2_conv1"))]
    start = time.perf_counter()
    model.fit(x_train / np.float32(255), y_train, batch_size=128, epochs=args.epochs,
              validation_split=0.05, verbose=2, callbacks=views)
    total = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test / np.float32(255), y_test, verbose=0)
    print(f"test accuracy on all {len(y_test)} Fashion-MNIST test images: {accuracy:.4f}")
    spent = [view.seconds / args.epochs for view in views]
    print(f"per epoch: {total / args.epochs:.1f} s in all; FeatureEvolution {spent[0]:.2f} s, "
          f"TensorBoardImages {spent[1]:.2f} s "
          f"({sum(spent) / (total / args.epochs - sum(spent)):.1%} on top of training)")

    args.out.mkdir(parents=True, exist_ok=True)
    inference_copy(model).save(args.out / MODEL_FILE)
    images, labels = sample_per_class(x_test, y_test, SAMPLES_PER_CLASS)
    np.savez_compressed(args.out / IMAGES_FILE, images=images, labels=labels)
    print(f"wrote {args.out / MODEL_FILE}, and {len(labels)} test images to "
          f"{args.out / IMAGES_FILE}; views in {args.log_dir}")


if __name__ == "__main__":
    main()
