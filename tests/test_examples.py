import keras
import numpy as np
import pytest
from conftest import ops_model

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.dataset.examples import (
    examples_caption,
    plot_top_examples,
    read_index,
    top_examples,
    write_index,
)
from kvis.dataset.scan import scan
from kvis.deconv.deconvnet import deconvnet
from kvis.layers.receptive_fields import receptive_fields


@pytest.fixture
def scanned(tiny):
    configure_model(tiny, preprocessing="unit")
    pixels = np.random.default_rng(8).integers(0, 256, (20, 16, 16, 3))
    data = (pixels / 255.0).astype(np.float32)  # exact pixels: the source gives them back
    return tiny, data, pixels, scan(tiny, data, ["conv1", "conv2"], count=4, progress=False)


def test_projections_are_the_deconvnet_of_each_activation_and_patches_its_window(scanned):
    model, data, pixels, found = scanned
    result = top_examples(model, found, data, layer="conv2", channels=[0, 3, 5], progress=False)
    field = receptive_fields(model)["conv2"]
    top = found.top["conv2"]
    checked = 0
    for i, channel in enumerate([0, 3, 5]):
        for j in range(found.count):
            image, position = top.images[channel, j], tuple(top.positions[channel, j])
            top_, left, bottom, right = field.window(*position, (16, 16))
            crop = np.s_[top_:bottom + 1, left:right + 1]
            np.testing.assert_array_equal(result.patches[i, j], pixels[image][crop])
            own = deconvnet(model, data[image:image + 1], "conv2", channels=[channel],
                            progress=False)
            if tuple(own.positions[0]) == position:  # the image's own strongest activation
                signal = own.signals[0][crop]
                expected = 0.5 + 0.5 * signal / np.abs(own.signals[0]).max()
                np.testing.assert_allclose(result.projections[i, j], expected, atol=1e-5)
                checked += 1
    assert checked >= 3
    np.testing.assert_array_equal(result.values, top.values[[0, 3, 5]])
    assert result.names[0][0] == f"image {top.images[0, 0]}"


def test_the_index_gives_back_the_scan(scanned, tmp_path):
    _, _, _, found = scanned
    write_index(found, tmp_path / "index.json")
    again = read_index(tmp_path / "index.json")
    assert (again.model, again.layers, again.count, again.images, again.strongest) == (
        found.model, found.layers, found.count, found.images, "images")
    for layer in found.layers:
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(again.top[layer], field),
                                          getattr(found.top[layer], field))
        np.testing.assert_allclose(again.stats[layer].mean, found.stats[layer].mean)
    with pytest.raises(KvisError, match="scan index not found"):
        read_index(tmp_path / "missing.json")


def test_the_figure_shows_every_channel_block(scanned):
    model, data, _, found = scanned
    result = top_examples(model, found, data, layer="conv1", count=3, progress=False)
    figure = plot_top_examples(result, per_row=3)
    shown = [ax.images[0].get_array() for ax in figure.axes if ax.images]
    assert len(shown) == 3  # one mosaic per channel
    height, width = result.patches.shape[2:4]
    block = 2 * (width + 1) - 1  # k = 4: a 2 x 2 grid, 1 px apart
    for i, mosaic in enumerate(shown):  # tile j of each grid is projection j and patch j
        for j in range(found.count):
            top, left = (j // 2) * (height + 1), (j % 2) * (width + 1)
            np.testing.assert_allclose(mosaic[top:top + height, left:left + width],
                                       result.projections[i, j])
            left += block + 3
            np.testing.assert_allclose(mosaic[top:top + height, left:left + width],
                                       result.patches[i, j] / 255.0, atol=1e-7)
    with pytest.raises(KvisError, match="channel 9 is out of range"):
        top_examples(model, found, data, layer="conv1", channels=[9])
    with pytest.raises(KvisError, match="the scan covered conv1, conv2, not 'gap'"):
        top_examples(model, found, data, layer="gap")


def test_channels_are_shown_in_order_of_the_max_their_labels_say(scanned):
    model, data, _, found = scanned
    result = top_examples(model, found, data, layer="conv2", count=6, progress=False)
    peaks = found.top["conv2"].values[:, 0]
    np.testing.assert_array_equal(result.channels, np.argsort(-peaks, kind="stable"))
    figure = plot_top_examples(result)
    labels = [float(ax.get_title().split("max ")[1]) for ax in figure.axes if ax.get_title()]
    assert labels == sorted(labels, reverse=True) and len(labels) == 6
    assert "each channel's 4 strongest images (each at its strongest position), channels in " \
           "order of their max" in " ".join(figure._suptitle.get_text().split())  # wrapped
    chosen = top_examples(model, found, data, layer="conv2", channels=[5, 0], progress=False)
    assert list(chosen.channels) == [5, 0] and "order" not in examples_caption(chosen)
    assert all(len(set(names)) == 4 for names in result.names)  # four different images


def test_the_caption_says_when_an_image_can_repeat(scanned):
    model, data, _, _ = scanned
    found = scan(model, data, "conv1", count=4, strongest="positions", progress=False)
    result = top_examples(model, found, data, layer="conv1", count=2, progress=False)
    assert examples_caption(result).startswith(
        "each channel's 4 strongest positions (an image can repeat)")


def _unit_data(model, count, seed):
    configure_model(model, preprocessing="unit")
    pixels = np.random.default_rng(seed).integers(0, 256, (count, 16, 16, 3))
    return (pixels / 255.0).astype(np.float32), pixels


def test_top_examples_of_operation_nodes_are_cropped_to_their_fields():
    model = ops_model()
    data, pixels = _unit_data(model, 12, 9)
    found = scan(model, data, count=3, batch_size=6, progress=False)
    assert found.layers[1].startswith("multiply")  # the gated map, an operation node
    fields, sizes = receptive_fields(model), []
    for layer in found.layers:
        result = top_examples(model, found, data, layer=layer, count=2, progress=False)
        top, channel = found.top[layer], result.channels[0]
        top_, left, bottom, right = fields[layer].window(*top.positions[channel, 0], (16, 16))
        np.testing.assert_array_equal(result.patches[0, 0], pixels[top.images[channel, 0]][
            top_:bottom + 1, left:right + 1])
        assert np.isfinite(result.projections).all()
        sizes.append(result.patches.shape[2])
    assert sizes == [3, 7, 11]  # the fields checked against the gradient support


def test_a_layer_without_a_known_field_shows_whole_images():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="conv")(inputs)
    x = keras.layers.UpSampling2D(name="up")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="after")(x))
    data, pixels = _unit_data(model, 6, 10)
    found = scan(model, data, ["after"], count=2, progress=False)
    assert receptive_fields(model)["after"] is None
    with pytest.warns(UserWarning, match="receptive field of 'after' is unknown"):
        result = top_examples(model, found, data, layer="after", progress=False)
    for i, channel in enumerate(result.channels):
        np.testing.assert_array_equal(result.patches[i, 0],
                                      pixels[found.top["after"].images[channel, 0]])


@pytest.mark.integration
def test_efficientnet_top_examples_after_a_scan(efficientnet_b0):
    model = efficientnet_b0
    configure_model(model, preprocessing="none")
    pixels = np.random.default_rng(11).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    found = scan(model, pixels, ["block2a_se_excite"], count=2, batch_size=6, progress=False)
    fields = receptive_fields(model)
    for layer in found.layers:  # behind squeeze-excitation gates, with no field before
        result = top_examples(model, found, pixels, layer=layer, count=2, progress=False)
        top, channel = found.top[layer], result.channels[0]
        top_, left, bottom, right = fields[layer].window(*top.positions[channel, 0], (32, 32))
        np.testing.assert_array_equal(result.patches[0, 0], pixels[top.images[channel, 0]][
            top_:bottom + 1, left:right + 1])
        assert result.patches.shape[2:4] == (11, 11)
    # stem 3x3/2: 3 px; block1a's 3x3 depthwise: + 2 strides of 2; block2a's 3x3/2 depthwise
    # (after 1x1 convs and the gate, which keep the field): + 2 more strides of 2.
    assert [fields[p].size[0] for p in ("stem_conv", "block1a_se_excite", "block2a_se_excite")] \
        == [3, 7, 11]
