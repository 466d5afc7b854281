"""The demo model that ships with kvis: a small VGG-style CNN trained on Fashion-MNIST.

Everything here works offline: the trained model, its class names and a few hundred real
Fashion-MNIST test images with labels are package data.
"""

from importlib import resources

import keras
import numpy as np

CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
INPUT_SHAPE = (28, 28, 1)
MODEL_FILE = "demo_model.keras"
IMAGES_FILE = "demo_images.npz"


def build_demo_model(kernel_constraint=None):
    """The untrained demo architecture: three VGG-style conv blocks and a dense head.

    Input: float32 (N, 28, 28, 1) grayscale in [0, 1]. Output: (N, 10) softmax probabilities.
    Layers are named like VGG16's (`block1_conv1`, `block2_pool`, `fc1`, `predictions`).
    `kernel_constraint` applies to every conv layer (e.g. `kvis.FilterNormConstraint`).
    """
    conv = dict(kernel_size=3, padding="same", activation="relu",
                kernel_constraint=kernel_constraint)
    inputs = keras.Input(INPUT_SHAPE, name="input")
    x = keras.layers.Conv2D(32, name="block1_conv1", **conv)(inputs)
    x = keras.layers.Conv2D(32, name="block1_conv2", **conv)(x)
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = keras.layers.Conv2D(64, name="block2_conv1", **conv)(x)
    x = keras.layers.Conv2D(64, name="block2_conv2", **conv)(x)
    x = keras.layers.MaxPooling2D(2, name="block2_pool")(x)
    x = keras.layers.Conv2D(128, name="block3_conv1", **conv)(x)
    x = keras.layers.MaxPooling2D(2, name="block3_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="kvis_demo")


def data_path(name):
    """Filesystem path of a file in `kvis/data`."""
    return resources.files("kvis") / "data" / name


def demo_images():
    """Real Fashion-MNIST test images that ship with kvis.

    Returns:
        `(images, labels)`: uint8 (N, 28, 28, 1) in [0, 255] and int64 (N,) class indices
        into `CLASS_NAMES`.
    """
    with np.load(data_path(IMAGES_FILE)) as data:
        return data["images"], data["labels"]
