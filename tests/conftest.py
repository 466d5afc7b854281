"""Tiny models for fast tests; the real VGG16/ResNet50 graphs (random weights) once a session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Full float32 matmuls and convolutions on GPUs too (TF32 would loosen every tolerance here).
tf.config.experimental.enable_tensor_float_32_execution(False)


def pytest_collection_modifyitems(items):
    """Integration tests (real VGG16/ResNet50 graphs) are slow: `pytest -m "not slow"` skips
    them with the other marked tests."""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.slow)


def tiny_cnn(name="tiny"):
    """16x16 RGB -> conv(4) -> maxpool -> conv(6) -> GAP -> dense(3) softmax, seeded weights."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_base():
    """A small functional feature extractor, to be nested inside a classifier."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="base")


def nested_sequential(base):
    """The fine-tuning pattern Sequential([base, pooling, head])."""
    return keras.Sequential([keras.Input((16, 16, 3)), base,
                             keras.layers.GlobalAveragePooling2D(name="gap"),
                             keras.layers.Dense(5, name="head")], name="finetuned_seq")


def nested_functional(base):
    """The same fine-tuning pattern with the functional API."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(x), name="finetuned_fn")


def brute_force_top_k(activations, ids, k):
    """Per channel, the k largest activations by (value desc, id, row, col), sorted in Python."""
    count, height, width, channels = activations.shape
    n, r, c = np.meshgrid(np.arange(count), np.arange(height), np.arange(width), indexing="ij")
    values, images, positions = [], [], []
    for channel in range(channels):
        entries = sorted(zip(-activations[..., channel].ravel(), ids[n.ravel()], r.ravel(),
                             c.ravel()))[:k]
        values.append([-e[0] for e in entries])
        images.append([e[1] for e in entries])
        positions.append([(e[2], e[3]) for e in entries])
    return np.float32(values), np.int64(images), np.int32(positions)


def brute_force_top_images(activations, ids, k):
    """Per channel, the k images with the largest maximum (ties: lower id first), each at the
    first position of its maximum in row-major order, sorted in Python; -inf/-1 pads to k."""
    count, height, width, channels = activations.shape
    values = np.full((channels, k), -np.inf, np.float32)
    images, positions = np.full((channels, k), -1), np.full((channels, k, 2), -1, np.int32)
    for channel in range(channels):
        flat = activations[..., channel].reshape(count, -1)
        entries = sorted((-flat[n].max(), ids[n], int(np.argmax(flat[n]))) for n in range(count))
        for j, (value, image, where) in enumerate(entries[:k]):
            values[channel, j], images[channel, j] = -value, image
            positions[channel, j] = divmod(where, width)
    return values, images, positions


@pytest.fixture
def tiny():
    return tiny_cnn()


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def demo():
    from kvis.core.models import load_model

    return load_model("demo")


@pytest.fixture(scope="session")
def vgg16():
    return keras.applications.VGG16(weights=None)


@pytest.fixture(scope="session")
def resnet50():
    return keras.applications.ResNet50(weights=None)


def small_application(name, size=32):
    """A keras.applications model with random weights at a small input and 10 classes."""
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                             classes=10)


@pytest.fixture(scope="session")
def mobilenet_v3_small():
    """Operation nodes (x + 3, x * (1/6): hard-swish) and squeeze-excitation gates."""
    return small_application("MobileNetV3Small")


@pytest.fixture(scope="session")
def convnext_tiny():
    """Operation nodes (the residual `x + y`), LayerScale, LayerNormalization, nested stems."""
    return small_application("ConvNeXtTiny")


@pytest.fixture(scope="session")
def efficientnet_b0():
    """Squeeze-excitation gates through global pooling and Reshape to (1, 1, c)."""
    return small_application("EfficientNetB0")


def ops_model(stop_gate=False):
    """16x16 RGB through operation nodes that are not layers (`x + y`, `x * 0.5`, a mean over
    rows and columns as a squeeze-excitation gate), a DepthwiseConv2D, a SeparableConv2D and a
    Concatenate; seeded weights, no ReLU (every unit depends on its whole receptive field).

    Args:
        stop_gate: the gate through `keras.ops.stop_gradient`, so that a unit's gradient
            support is its field without the gate (the field kvis computes).
    """
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="conv1")(inputs)
    depthwise = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="depthwise")(x)
    separable = keras.layers.SeparableConv2D(4, 5, strides=2, padding="same",
                                             name="separable")(x)
    x = depthwise + separable * 0.5 + 1.0
    x = keras.layers.Concatenate(name="concat")(
        [x, keras.layers.Conv2D(4, 1, activation="tanh", name="point")(x)])
    gate = keras.ops.sigmoid(keras.ops.mean(x, axis=(1, 2), keepdims=True))
    x = x * (keras.ops.stop_gradient(gate) if stop_gate else gate)
    x = keras.layers.Conv2D(6, 3, strides=2, name="conv2")(x)
    x = keras.ops.mean(x, axis=(1, 2))
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="ops")
