import keras
import numpy as np
import pytest
from helpers import compatibility_matrix

from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.deconv.deconvnet import deconvnet, plot_projections, projection_images


def test_a_lone_max_pool_projects_only_onto_its_switches():
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, keras.layers.MaxPooling2D(2, name="pool")(inputs))
    x = np.random.default_rng(0).uniform(size=(1, 6, 6, 2)).astype(np.float32)
    result = deconvnet(model, x, "pool", channels=[1], whole_map=True)
    signal = result.signals[0]
    blocks = x[0, ..., 1].reshape(3, 2, 3, 2)
    switches = blocks == blocks.max(axis=(1, 3), keepdims=True)
    np.testing.assert_array_equal(signal[..., 1] != 0, switches.reshape(6, 6))
    np.testing.assert_allclose(signal[..., 1][switches.reshape(6, 6)], x[0, ..., 1][
        switches.reshape(6, 6)])
    assert not signal[..., 0].any()


def test_one_activation_is_kept_at_its_peak(demo):
    from kvis.core.demo import demo_images
    from kvis.core.models import preprocessing_for
    from kvis.layers.feature_maps import feature_maps

    images, _ = demo_images()
    x = preprocessing_for(demo)(images[:1])
    maps = feature_maps(demo, x, "block2_conv2", progress=False)["block2_conv2"][0]
    result = deconvnet(demo, x, "block2_conv2", count=3)
    strongest = np.argsort(-maps.max(axis=(0, 1)))[:3]
    np.testing.assert_array_equal(result.channels, strongest)
    for k, c in enumerate(strongest):
        row, col = result.positions[k]
        assert maps[row, col, c] == pytest.approx(maps[..., c].max())
        assert result.activations[k] == pytest.approx(maps[..., c].max())


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("start", [dict(layer="block2_conv2", count=3),
                                   dict(layer="block3_pool", count=2, whole_map=True),
                                   dict(classes=[9, 3])])
def test_explicit_equals_gradient_on_the_demo(demo, guided, start):
    x = np.random.default_rng(1).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    explicit = deconvnet(demo, x, guided=guided, **start)
    gradient = deconvnet(demo, x, guided=guided, method="gradient", **start)
    assert np.abs(explicit.signals).max() > 0
    np.testing.assert_allclose(explicit.signals, gradient.signals, rtol=1e-5, atol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("name, layer", [("vgg16", "block4_conv2"),
                                         ("resnet50", "conv3_block1_out"),
                                         ("resnet50", None)])
def test_explicit_equals_gradient_on_real_graphs(name, layer, vgg16, resnet50):
    model = vgg16 if name == "vgg16" else resnet50
    x = np.random.default_rng(0).normal(0, 40, (1, 224, 224, 3)).astype(np.float32)
    start = dict(layer=layer, count=2) if layer else dict(classes=[281])
    for guided in (False, True):
        explicit = deconvnet(model, x, guided=guided, **start)
        gradient = deconvnet(model, x, guided=guided, method="gradient", **start)
        scale = np.abs(explicit.signals).max()
        assert scale > 0
        np.testing.assert_allclose(explicit.signals, gradient.signals, atol=1e-5 * scale)


def _relu_then_mix(fused):
    """(6, 6, 2) -> ReLU (a layer, or fused into an identity 1x1 conv) -> 1x1 conv to one
    channel with weights (1, 0.5): the signals below the ReLU are known in closed form."""
    inputs = keras.Input((6, 6, 2))
    if fused:
        relu = keras.layers.Conv2D(2, 1, activation="relu", use_bias=False, name="relu",
                                   kernel_initializer=keras.initializers.Constant(
                                       np.eye(2).reshape(1, 1, 2, 2)))
    else:
        relu = keras.layers.ReLU(name="relu")
    weights = keras.initializers.Constant(np.array([1.0, 0.5]).reshape(1, 1, 2, 1))
    mix = keras.layers.Conv2D(1, 1, use_bias=False, name="mix", kernel_initializer=weights)
    return keras.Model(inputs, mix(relu(inputs)))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("method", ["explicit", "gradient"])
def test_guided_is_masked_where_the_forward_relu_was_off(fused, method):
    model = _relu_then_mix(fused)
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 2)).astype(np.float32)
    on = np.maximum(x[0], 0)
    kept = on[..., 0] + 0.5 * on[..., 1]  # the mix layer's map, kept whole
    below = kept[..., None] * np.array([1.0, 0.5], np.float32)  # through the 1x1 conv
    plain = deconvnet(model, x, "mix", channels=[0], whole_map=True, method=method,
                      progress=False).signals[0]
    guided = deconvnet(model, x, "mix", channels=[0], whole_map=True, guided=True,
                       method=method, progress=False).signals[0]
    off = x[0] <= 0
    assert off.any() and (~off).any()
    assert np.all(guided[off] == 0.0)  # exactly zero where the forward ReLU was off
    np.testing.assert_allclose(guided[~off], np.maximum(below, 0)[~off], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(plain, np.maximum(below, 0), rtol=1e-6, atol=1e-7)
    assert np.abs(plain[off]).max() > 0  # the deconvnet ignores the forward mask
    if fused:  # the fused ReLU was bypassed without touching the caller's layer
        assert model.get_layer("relu").activation is keras.activations.relu


def test_guided_differs_from_the_deconvnet_on_the_demo(demo):
    x = np.random.default_rng(2).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    plain = deconvnet(demo, x, "block1_conv2", channels=[4], whole_map=True)
    guided = deconvnet(demo, x, "block1_conv2", channels=[4], whole_map=True, guided=True)
    assert plain.rule == "deconvnet" and guided.rule == "guided"
    assert not np.allclose(plain.signals, guided.signals)


def demo_model():
    from kvis.core.models import load_model

    return load_model("demo")


class Doubler(keras.layers.Layer):
    """A user's custom layer: the deconvnet has no rule for it."""

    def call(self, x):
        return 2 * x


def test_unsupported_layers_and_bad_starts_are_named():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = Doubler(name="double")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="top")(x))
    image = np.ones((1, 8, 8, 1), np.float32)
    with pytest.raises(KvisError, match=r"^the deconvnet has no rule for layer 'double' "
                                        r"\(Doubler\); method='gradient' works for any graph$"):
        deconvnet(model, image, "top")
    assert np.abs(deconvnet(model, image, "top", method="gradient").signals).max() > 0
    with pytest.raises(KvisError, match="filter index 2 is out of range"):
        deconvnet(model, image, "conv", channels=[2])
    with pytest.raises(KvisError, match="projects one image; got 2"):
        deconvnet(model, np.ones((2, 8, 8, 1), np.float32), "conv")
    with pytest.raises(KvisError, match="needs a spatial layer; 'fc1'.*project from a class"):
        deconvnet(demo_model(), np.ones((1, 28, 28, 1), np.float32), "fc1")
    with pytest.raises(KvisError, match="needs a classifier"):
        deconvnet(model, image, classes=[0])


def test_crop_boxes_are_the_receptive_fields_and_the_figure_shows_them(demo):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (28, 28, 1))
    image = load_image(pixels, demo)
    result = deconvnet(demo, image, "block2_conv1", count=4)
    # block2_conv1: a 10x10 field, stride 2, unit (0, 0) centred at 0.5: unit (r, c) sees
    # rows 2r - 4 ... 2r + 5 and cols 2c - 4 ... 2c + 5, clipped to the 28x28 image.
    for k, (row, col) in enumerate(result.positions):
        expected = (max(2 * row - 4, 0), max(2 * col - 4, 0), min(2 * row + 5, 27),
                    min(2 * col + 5, 27))
        assert tuple(result.boxes[k]) == expected
    np.testing.assert_array_equal(result.pixels[0], pixels)
    assert result.names == ["array"] and not result.bgr
    figure = plot_projections(result)
    for k in range(len(result.units)):
        top, left, bottom, right = result.boxes[k]
        patch = figure.axes[2 * k + 1].images[0].get_array()
        np.testing.assert_allclose(patch, pixels[top:bottom + 1, left:right + 1, 0] / 255)
        shown = figure.axes[2 * k].images[0].get_array()
        np.testing.assert_allclose(shown, projection_images(result)[k][
            top:bottom + 1, left:right + 1, 0])
    assert figure._suptitle.get_text() == "array: deconvnet from block2_conv1"
    whole = deconvnet(demo, image, "block2_conv1", channels=[0], whole_map=True)
    assert whole.boxes.tolist() == [[0, 0, 27, 27]]


def test_a_loaded_image_projects_as_its_array(demo):
    from kvis.core.demo import demo_images

    images, labels = demo_images()
    boot = load_image(images[np.flatnonzero(labels == 9)[0]], demo)
    for start in (dict(layer="block2_conv2", count=2), dict(classes="ankle boot")):
        from_image = deconvnet(demo, boot, **start)
        from_array = deconvnet(demo, boot.x, **start)
        np.testing.assert_array_equal(from_image.signals, from_array.signals)
        np.testing.assert_array_equal(from_image.pixels[0], boot.pixels)
        np.testing.assert_array_equal(from_array.pixels[0], boot.pixels)
    assert from_image.units == ["class ankle boot"] and from_image.channels.tolist() == [9]


def test_display_images_reverse_bgr_and_scale_each_projection():
    from kvis.deconv.deconvnet import Projection

    signals = np.zeros((2, 2, 2, 3), np.float32)
    signals[0, 0, 0] = [4.0, 0.0, -2.0]
    signals[1, 1, 1] = [0.0, 1.0, 0.0]
    result = Projection(signals, ["a", "b"], np.array([0, 1]), np.full((2, 2), -1),
                        np.ones(2), np.tile([0, 0, 1, 1], (2, 1)), np.zeros((2, 2, 3), np.uint8),
                        "x", "l", "deconvnet", bgr=True)
    shown = projection_images(result)
    np.testing.assert_allclose(shown[0, 0, 0], [0.25, 0.5, 1.0])  # BGR -> RGB, max |4| -> 1
    np.testing.assert_allclose(shown[1, 1, 1], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(shown[0, 1, 1], [0.5, 0.5, 0.5])  # zero is mid-gray


def test_a_nested_base_projects_from_its_own_path_as_from_its_last_layer():
    from conftest import nested_functional, tiny_base

    from kvis.core.anatomy import stage_layers
    from kvis.core.models import configure_model

    model = nested_functional(tiny_base())
    configure_model(model, preprocessing="unit")
    x = np.random.default_rng(7).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    assert stage_layers(model) == ["base/conv1", "base/conv2"]  # not the container "base"
    outer = deconvnet(model, x, "base", count=3, progress=False)
    inner = deconvnet(model, x, "base/conv2", count=3, progress=False)
    assert np.abs(inner.signals).max() > 0
    np.testing.assert_allclose(outer.signals, inner.signals, rtol=1e-5, atol=1e-7)


# keras.applications graphs (random weights, the smallest input each allows), from a layer
# whose projection crosses the layer kinds named.
APPLICATIONS = [
    ("MobileNetV2", 32, "block_2_add", False),  # ReLU6, DepthwiseConv2D, ZeroPadding2D, Add
    ("Xception", 71, "block4_sepconv1_act", False),  # SeparableConv2D, MaxPooling2D, Add
    ("DenseNet121", 32, "pool2_pool", True),  # Concatenate, AveragePooling2D, MaxPooling2D
    ("InceptionV3", 75, "mixed1", False),  # Concatenate, AveragePooling2D
    ("InceptionResNetV2", 75, "block35_1_ac", True),  # CustomScaleLayer: x + scale * y
    ("EfficientNetB0", 32, "block2b_add", True),  # swish, squeeze-excitation, Rescaling
    ("MobileNetV3Small", 32, "expanded_conv_3_project_bn", False),  # hard_silu, SE, ops nodes
    ("ConvNeXtTiny", 32, "convnext_tiny_stage_1_block_0_depthwise_conv", True),  # GELU, LN
]


@pytest.mark.integration
@pytest.mark.parametrize("name, size, layer, guided", APPLICATIONS,
                         ids=[spec[0] for spec in APPLICATIONS])
def test_explicit_equals_gradient_on_keras_applications(name, size, layer, guided):
    from kvis.core.backward_rules import layer_gradients
    from kvis.deconv.explicit import explicit_deconvnet

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                              classes=10)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (1, size, size, 3)).astype(np.float32)
    signal = rng.normal(0, 1, (1, *model.get_layer(layer).output.shape[1:])).astype(np.float32)
    explicit = explicit_deconvnet(model, x, layer, signal, guided=guided, progress=False)
    gradient = layer_gradients(model, x, layer, signal, rule="guided" if guided else "deconvnet",
                               progress=False)[0]
    scale = np.abs(gradient).max()
    assert scale > 0
    np.testing.assert_allclose(explicit, gradient, atol=1e-5 * scale)


@pytest.mark.integration
def test_explicit_equals_gradient_from_a_class_of_mobilenet_v3():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3),
                                                classes=10)
    x = np.random.default_rng(0).normal(0, 1, (1, 32, 32, 3)).astype(np.float32)
    explicit = deconvnet(model, x, classes=[3], progress=False).signals
    gradient = deconvnet(model, x, classes=[3], method="gradient", progress=False).signals
    scale = np.abs(gradient).max()
    assert scale > 0
    np.testing.assert_allclose(explicit, gradient, atol=1e-5 * scale)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["keras-hub ResNet", "keras-hub EfficientNet"])
def test_explicit_equals_gradient_through_keras_hub_classifiers(name):
    """From a class back through the head and the whole nested backbone (basic residual
    blocks; MBConv blocks with squeeze-excitation and depthwise convolutions)."""
    keras.utils.set_random_seed(0)
    model = compatibility_matrix().ARCHITECTURES[name]()
    x = np.random.default_rng(0).normal(0, 1, (1, *model.input_shape[1:])).astype(np.float32)
    for guided in (False, True):
        explicit = deconvnet(model, x, classes=[3], guided=guided, progress=False).signals
        gradient = deconvnet(model, x, classes=[3], guided=guided, method="gradient",
                             progress=False).signals
        scale = np.abs(gradient).max()
        assert scale > 0
        np.testing.assert_allclose(explicit, gradient, atol=1e-5 * scale)
