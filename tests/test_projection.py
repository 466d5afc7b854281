import keras
import numpy as np
import pytest

from kvis.errors import KvisError
from kvis.projection import deconvnet, plot_projections, projection_images


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
    from kvis.demo import demo_images
    from kvis.features import feature_maps
    from kvis.models import preprocessing_for

    images, _ = demo_images()
    x = preprocessing_for(demo)(images[:1])
    maps = feature_maps(demo, x, "block2_conv2")["block2_conv2"][0]
    result = deconvnet(demo, x, "block2_conv2", top=3)
    strongest = np.argsort(-maps.max(axis=(0, 1)))[:3]
    np.testing.assert_array_equal(result.channels, strongest)
    for k, c in enumerate(strongest):
        row, col = result.positions[k]
        assert maps[row, col, c] == pytest.approx(maps[..., c].max())
        assert result.activations[k] == pytest.approx(maps[..., c].max())


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("start", [dict(layer="block2_conv2", top=3),
                                   dict(layer="block3_pool", top=2, whole_map=True),
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
    start = dict(layer=layer, top=2) if layer else dict(classes=[281])
    for guided in (False, True):
        explicit = deconvnet(model, x, guided=guided, **start)
        gradient = deconvnet(model, x, guided=guided, method="gradient", **start)
        scale = np.abs(explicit.signals).max()
        assert scale > 0
        np.testing.assert_allclose(explicit.signals, gradient.signals, atol=1e-5 * scale)


def test_guided_differs_and_is_masked(demo):
    x = np.random.default_rng(2).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    plain = deconvnet(demo, x, "block1_conv2", channels=[4], whole_map=True)
    guided = deconvnet(demo, x, "block1_conv2", channels=[4], whole_map=True, guided=True)
    assert not np.allclose(plain.signals, guided.signals)


def test_unsupported_layers_and_bad_starts_are_named():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = keras.layers.UpSampling2D(name="up")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="top")(x))
    image = np.ones((1, 8, 8, 1), np.float32)
    with pytest.raises(KvisError, match=r"cannot pass through layer 'up' \(UpSampling2D\)"):
        deconvnet(model, image, "top")
    assert np.abs(deconvnet(model, image, "top", method="gradient").signals).max() > 0
    with pytest.raises(KvisError, match="filter index 2 is out of range"):
        deconvnet(model, image, "conv", channels=[2])
    with pytest.raises(KvisError, match="one image"):
        deconvnet(model, np.ones((2, 8, 8, 1), np.float32), "conv")


def test_figure_shows_projection_and_receptive_field_patch(demo):
    x = np.random.default_rng(3).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    pixels = (x[0] * 255).astype(np.uint8)
    result = deconvnet(demo, x, "block2_conv1", top=2)
    figure = plot_projections(result, pixels, model=demo)
    patch = figure.axes[1].images[0].get_array()
    assert patch.shape == (10, 10) or min(patch.shape) < 10  # receptive field 10x10, clipped
    np.testing.assert_allclose(projection_images(result)[0].max(), max(
        0.5 + 0.5 * result.signals[0].max() / np.abs(result.signals[0]).max(), 0.5), rtol=1e-6)
