"""The deconvnet's rule at each layer kind (kvis.deconv.rules), on tiny hand-built models:
linear layers against the adjoint identity, the others against closed forms; each also
against the input gradient under the same rule (kvis.core.backward_rules)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

from kvis.core.backward_rules import layer_gradients
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.deconv.explicit import explicit_deconvnet

RNG = np.random.default_rng(0)


def _model(build, shape=(6, 6, 3)):
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape)
    return keras.Model(inputs, build(inputs))


def _last(model):
    return list(model_graph(model).nodes)[-1]


def _both(model, x, signal, guided=False):
    """The explicit projection and the input gradient under the same rule."""
    path = _last(model)
    explicit = explicit_deconvnet(model, x, path, signal, guided=guided, progress=False)
    gradient = layer_gradients(model, x, path, signal, rule="guided" if guided else "deconvnet",
                               progress=False)[0]
    np.testing.assert_allclose(explicit, gradient, rtol=1e-5, atol=1e-6)
    return explicit


def _inputs(model, count=2):
    x = RNG.normal(size=(count, *model.input_shape[1:])).astype(np.float32)
    signal = RNG.normal(size=(count, *model.output_shape[1:])).astype(np.float32)
    return x, signal


def _conv1x1(channels, name):
    return layers.Conv2D(channels, 1, use_bias=False, name=name)


# Linear maps L (affine: L(x) - L(0) is linear): the projection is their transpose, so
# sum(signal * (L(x) - L(0))) == sum(projection * x) for every x and signal.
LINEAR = {
    "Conv2D strided, same": lambda x: layers.Conv2D(4, 3, strides=2, padding="same")(x),
    "Conv2D dilated": lambda x: layers.Conv2D(2, 3, dilation_rate=2)(x),
    "Conv2D groups=3 (depthwise)": lambda x: layers.Conv2D(6, 3, groups=3, padding="same")(x),
    "Conv2D groups=2": lambda x: layers.Conv2D(4, 3, groups=2)(_conv1x1(4, "c")(x)),
    "DepthwiseConv2D strided": lambda x: layers.DepthwiseConv2D(3, 2, depth_multiplier=2)(x),
    "DepthwiseConv2D dilated": lambda x: layers.DepthwiseConv2D(
        3, padding="same", dilation_rate=2)(x),
    "SeparableConv2D strided": lambda x: layers.SeparableConv2D(
        5, 3, strides=2, padding="same", depth_multiplier=2)(x),
    "Dense on a spatial tensor": lambda x: layers.Dense(4)(x),
    "AveragePooling2D same": lambda x: layers.AveragePooling2D(3, 2, padding="same")(x),
    "GlobalAveragePooling2D keepdims": lambda x: layers.GlobalAveragePooling2D(
        keepdims=True)(x),
    "BatchNormalization": lambda x: layers.BatchNormalization(
        gamma_initializer="random_uniform", moving_variance_initializer="ones")(x),
    "Normalization, Rescaling": lambda x: layers.Rescaling(1 / 255, offset=-1)(
        layers.Normalization(mean=[1, 2, 3], variance=[4, 0.25, 9])(x)),
    "ZeroPadding2D, Cropping2D": lambda x: layers.Cropping2D(((2, 0), (1, 2)))(
        layers.ZeroPadding2D(((1, 0), (0, 3)))(x)),
    "Reshape, Permute, Flatten": lambda x: layers.Flatten()(
        layers.Permute((2, 1, 3))(layers.Reshape((3, 12, 3))(x))),
    "Concatenate": lambda x: layers.Concatenate()([_conv1x1(2, "a")(x), x,
                                                   _conv1x1(1, "b")(x)]),
    "Add, Subtract, Average": lambda x: layers.Average()([
        layers.Add()([x, _conv1x1(3, "a")(x)]), layers.Subtract()([x, _conv1x1(3, "b")(x)])]),
    "Add broadcast": lambda x: layers.Add()([x, layers.GlobalAveragePooling2D(
        keepdims=True)(x)]),
    "Dropout, Identity, SpatialDropout2D": lambda x: layers.SpatialDropout2D(0.5)(
        layers.Identity()(layers.Dropout(0.5)(x))),
    "ops + - * / with constants": lambda x: (3.0 - (x + 1.5) * 2.0) / 4.0 - x,
    "ops mean, reshape": lambda x: ops.reshape(ops.mean(x, axis=(1, 2)), (-1, 1, 1, 3)) + ops.mean(
        x, axis=-1, keepdims=True),
    "CustomScaleLayer, LayerScale": lambda x: _scale_layers(x),
}


def _scale_layers(x):
    """InceptionResNetV2's residual x + 0.17 * branch, then ConvNeXt's per-channel scale."""
    from keras.src.applications.convnext import LayerScale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    return LayerScale(0.5, 3)(CustomScaleLayer(0.17)([x, _conv1x1(3, "branch")(x)]))


@pytest.mark.parametrize("kind", list(LINEAR))
def test_a_linear_layer_projects_through_its_transpose(kind):
    model = _model(LINEAR[kind])
    x, signal = _inputs(model)
    projection = _both(model, x, signal)
    change = model(x, training=False) - model(np.zeros_like(x), training=False)
    np.testing.assert_allclose(np.sum(projection * x, axis=(1, 2, 3)),
                               np.sum(signal * np.asarray(change),
                                      axis=tuple(range(1, signal.ndim))), rtol=1e-4, atol=1e-4)


def test_concatenate_splits_the_signal_by_channel_ranges():
    kernel = RNG.normal(size=(1, 1, 3, 2)).astype(np.float32)
    model = _model(lambda x: layers.Concatenate()([
        x, layers.Conv2D(2, 1, use_bias=False,
                         kernel_initializer=keras.initializers.Constant(kernel))(x)]))
    x, signal = _inputs(model)
    expected = signal[..., :3] + signal[..., 3:] @ kernel[0, 0].T
    np.testing.assert_allclose(_both(model, x, signal), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("rectifier", [
    layers.ReLU(max_value=6.0), layers.ReLU(negative_slope=0.1), layers.LeakyReLU(0.2),
    layers.ELU(), layers.Activation("silu"), layers.Activation("hard_silu"),
    layers.Activation("gelu"), layers.Activation("relu6")], ids=lambda layer: layer.name)
def test_every_relu_like_nonlinearity_rectifies_the_signal(rectifier, guided):
    model = _model(lambda x: rectifier(x))
    x, signal = _inputs(model)
    x = 5 * x  # beyond 6 too, where ReLU6 saturates
    assert (x > 6).any()
    expected = np.maximum(signal, 0) * ((x > 0) if guided else 1)
    np.testing.assert_allclose(_both(model, x, signal, guided), expected, rtol=1e-6)


def test_a_fused_swish_rectifies_below_its_layer():
    kernel = RNG.normal(size=(1, 1, 3, 2)).astype(np.float32)
    model = _model(lambda x: layers.Conv2D(
        2, 1, activation="swish", use_bias=False,
        kernel_initializer=keras.initializers.Constant(kernel))(x))
    x, signal = _inputs(model)
    positive = (x @ kernel[0, 0]) > 0
    expected = (np.maximum(signal, 0) * positive) @ kernel[0, 0].T
    np.testing.assert_allclose(_both(model, x, signal, guided=True), expected, rtol=1e-5,
                               atol=1e-6)


def _squeeze_excitation(x):
    gate = layers.Dense(3, activation="sigmoid", name="gate")(layers.GlobalAveragePooling2D()(x))
    return layers.Multiply()([x, layers.Reshape((1, 1, 3))(gate)])


def _hard_swish(x):  # MobileNetV3's hard-swish: x * relu6(x + 3) / 6, keras.ops nodes
    return layers.Multiply()([x, layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])


@pytest.mark.parametrize("form, gate", [
    (_squeeze_excitation, lambda model, x: keras.Model(model.input, model.get_layer(
        "gate").output)(x).numpy()[:, None, None, :]),
    (_hard_swish, lambda model, x: np.clip(x + 3, 0, 6) / 6),
    (lambda x: x * layers.Activation("sigmoid")(x), lambda model, x: 1 / (1 + np.exp(-x)))],
    ids=["squeeze-excitation", "hard-swish", "ops multiply"])
def test_a_product_gates_the_signal_by_its_forward_value(form, gate):
    model = _model(form)
    x, signal = _inputs(model)
    expected = signal * gate(model, x)
    np.testing.assert_allclose(_both(model, x, signal), expected, rtol=1e-5, atol=1e-6)
    # The true gradient also goes through the gate: saliency keeps it.
    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        total = tf.reduce_sum(model(inputs) * signal)
    saliency = layer_gradients(model, x, _last(model), signal, progress=False)[0]
    np.testing.assert_allclose(saliency, tape.gradient(total, inputs), rtol=1e-5, atol=1e-6)
    assert not np.allclose(saliency, expected, atol=1e-3)


@pytest.mark.parametrize("axis", [-1, (1, 2, 3)])
def test_layer_normalization_is_its_affine_scale(axis):
    model = _model(lambda x: layers.LayerNormalization(
        axis=axis, epsilon=0.01, gamma_initializer="random_uniform")(x))
    x, signal = _inputs(model)
    gamma = model.layers[-1].gamma.numpy()
    variance = x.var(axis=tuple(np.atleast_1d(axis)), keepdims=True)
    expected = signal * gamma.reshape((1,) * (4 - gamma.ndim) + gamma.shape) / np.sqrt(
        variance + 0.01)
    np.testing.assert_allclose(_both(model, x, signal), expected, rtol=1e-5, atol=1e-6)


def test_global_max_pooling_unpools_to_each_maximum():
    model = _model(lambda x: layers.GlobalMaxPooling2D()(x))
    x, signal = _inputs(model)
    projection = _both(model, x, signal)
    peaks = x == x.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(projection, np.where(peaks, signal[:, None, None, :], 0))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid", "softmax"])
def test_other_activations_pass_their_local_derivative(activation):
    model = _model(lambda x: layers.Dense(4, activation=activation)(x))
    x, signal = _inputs(model)
    x = 2 * x
    explicit = _both(model, x, signal)
    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        total = tf.reduce_sum(model(inputs) * signal)
    np.testing.assert_allclose(explicit, tape.gradient(total, inputs), rtol=1e-5, atol=1e-6)


def test_an_activation_without_rule_is_named():
    model = _model(lambda x: layers.Conv2D(2, 1, activation="softplus", name="soft")(x))
    x, signal = _inputs(model)
    with pytest.raises(KvisError, match=r"^the deconvnet has no rule for the softplus "
                                        r"activation of layer 'soft' \(Conv2D\); "
                                        r"method='gradient' works for any graph$"):
        explicit_deconvnet(model, x, "soft", signal, progress=False)
    assert np.abs(layer_gradients(model, x, "soft", signal, rule="deconvnet",
                                  progress=False)[0]).max() > 0
