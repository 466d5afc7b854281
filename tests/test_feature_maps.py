import keras
import numpy as np
import pytest
from conftest import nested_sequential, ops_model, tiny_base
from matplotlib.backends.backend_agg import FigureCanvasAgg

from kvis.core.anatomy import spatial_layers, stage_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import load_image
from kvis.core.models import configure_model
from kvis.layers.feature_maps import (
    FeatureMaps,
    feature_maps,
    plot_feature_maps,
    plot_feature_overview,
    plot_layer_summary,
    rank_channels,
)
from kvis.plot.figures import mosaic_corners


def _conv_same(x, kernel, bias):
    """Direct NumPy 'same' cross-correlation, stride 1: the independent reference."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[3],), np.float64)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, i:i + x.shape[1], j:j + x.shape[2], :]
            out += np.einsum("nhwc,co->nhwo", window, kernel[i, j])
    return out + bias


def _result(maps, names=("image 0",), pixels=None, stages=None):
    """A FeatureMaps built by hand, for the figure tests."""
    first = next(iter(maps.values()))
    if pixels is None:
        pixels = np.zeros((len(first), 8, 8, 3), np.uint8)
    return FeatureMaps(maps, pixels, list(names), tuple(stages or maps), "hand")


def test_feature_maps_equal_a_numpy_convolution(tiny, images):
    kernel, bias = (w.numpy() for w in tiny.get_layer("conv1").weights)
    conv1 = np.maximum(_conv_same(images, kernel, bias), 0)
    pool1 = conv1.reshape(2, 8, 2, 8, 2, 4).max(axis=(2, 4))
    maps = feature_maps(tiny, images, ["conv1", "pool1"], progress=False)
    assert list(maps) == ["conv1", "pool1"] and len(maps) == 2
    np.testing.assert_allclose(maps["conv1"], conv1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps["pool1"], pool1, rtol=1e-5, atol=1e-5)


def test_feature_maps_equal_a_keras_sub_model_call(tiny, images):
    maps = feature_maps(tiny, images, progress=False)
    for path in ("conv1", "pool1", "conv2"):
        direct = keras.Model(tiny.input, tiny.get_layer(path).output)(images).numpy()
        np.testing.assert_allclose(maps[path], direct, rtol=1e-6, atol=1e-6)
        assert maps[path].dtype == np.float32


def test_batches_of_any_size_give_the_same_maps(tiny):
    x = np.random.default_rng(4).uniform(-1, 1, (5, 16, 16, 3)).astype(np.float32)
    whole = feature_maps(tiny, x, "conv2", progress=False)["conv2"]
    split = feature_maps(tiny, x, "conv2", batch_size=2, progress=False)["conv2"]
    np.testing.assert_array_equal(whole, split)
    np.testing.assert_array_equal(feature_maps(tiny, x[3:4], "conv2", progress=False)["conv2"],
                                  split[3:4])


def test_a_loaded_image_gives_the_same_maps_as_its_array(tiny):
    configure_model(tiny, preprocessing="unit")
    pixels = np.random.default_rng(5).integers(0, 256, (16, 16, 3))
    image = load_image(pixels, tiny)
    from_image = feature_maps(tiny, image, "conv2", progress=False)
    from_array = feature_maps(tiny, image.x, "conv2", progress=False)
    np.testing.assert_array_equal(from_image["conv2"], from_array["conv2"])
    np.testing.assert_array_equal(from_image.pixels[0], pixels)
    np.testing.assert_array_equal(from_array.pixels[0], pixels)  # back through "unit"
    assert from_image.names == ["array"] and from_array.names == ["image 0"]
    two = feature_maps(tiny, [image, image], "conv2", progress=False)
    # A batch of two against a batch of one: CPU kernels may differ by float32 round-off.
    np.testing.assert_allclose(two["conv2"][1], from_image["conv2"][0], rtol=1e-6, atol=1e-7)


def test_all_layers_means_every_spatial_layer_and_the_stages(tiny, images):
    assert spatial_layers(tiny) == ["conv1", "pool1", "conv2"]
    maps = feature_maps(tiny, images, progress=False)
    assert list(maps) == ["conv1", "pool1", "conv2"]
    assert maps.stages == tuple(stage_layers(tiny)) == ("conv1", "pool1", "conv2")
    assert repr(maps) == ("FeatureMaps(model='tiny', images=['image 0', 'image 1'], {conv1: "
                          "(2, 16, 16, 4), pool1: (2, 8, 8, 4), conv2: (2, 6, 6, 6)})")
    assert feature_maps(tiny, images, ["pool1", "conv1"], progress=False).stages == \
        ("pool1", "conv1")


def test_nested_layers_are_found_by_their_suffix():
    model = nested_sequential(tiny_base())
    x = np.random.default_rng(6).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    maps = feature_maps(model, x, "conv2", progress=False)
    assert list(maps) == ["base/conv2"] and maps.layer() == "base/conv2"
    np.testing.assert_array_equal(maps["conv2"], maps["base/conv2"])
    with pytest.raises(KeyError):
        maps["conv9"]


def test_non_spatial_layer_and_wrong_input_are_refused(tiny, images):
    with pytest.raises(KvisError, match=r"feature maps needs a spatial layer; 'gap' "
                                        r"\(GlobalAveragePooling2D\)"):
        feature_maps(tiny, images, "gap")
    with pytest.raises(KvisError, match=r"do not fit the model input \(N, 16, 16, 3\)"):
        feature_maps(tiny, images[:, :8], "conv1")
    with pytest.raises(KvisError, match="no layer 'conv3' in model 'tiny'; closest: conv"):
        feature_maps(tiny, images, "conv3")


def test_a_model_without_spatial_layers_is_refused():
    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="mlp")
    with pytest.raises(KvisError, match="'mlp' has no layers with spatial feature maps"):
        feature_maps(dense, np.zeros((1, 4), np.float32))


def test_the_caller_model_is_unchanged(tiny, images):
    before = [w.copy() for w in tiny.get_weights()]
    nodes = [len(layer._inbound_nodes) for layer in tiny.layers]
    feature_maps(tiny, images, progress=False)
    assert [len(layer._inbound_nodes) for layer in tiny.layers] == nodes
    for old, new in zip(before, tiny.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_rank_channels_orders_by_mean_or_max():
    maps = np.zeros((2, 2, 3), np.float32)
    maps[..., 0] = [[1, 1], [1, 1]]  # mean 1, max 1
    maps[..., 1] = [[4, 0], [0, 0]]  # mean 1, max 4
    maps[..., 2] = [[2, 2], [2, 0]]  # mean 1.5, max 2
    channels, scores = rank_channels(maps, "mean")
    assert channels.tolist() == [2, 0, 1] and scores.tolist() == [1.5, 1.0, 1.0]
    assert rank_channels(maps, "max")[0].tolist() == [1, 2, 0]


def test_feature_map_figure_shows_the_strongest_channels_in_order():
    rng = np.random.default_rng(0)
    maps = (1 + 0.1 * rng.uniform(0, 1, (5, 5, 10))).astype(np.float32) * np.arange(10)
    result = _result({"conv": maps[None]}, names=["boot.png"])
    fig = plot_feature_maps(result, count=3)
    assert [text.get_text().split()[0] for text in fig.axes[0].texts] == ["#9", "#8", "#7"]
    assert fig._suptitle.get_text() == "boot.png at conv"
    mosaic = np.ma.getdata(fig.axes[0].images[0].get_array())
    for (top, left), channel in zip(mosaic_corners((5, 5), 3, 2), [9, 8, 7]):
        np.testing.assert_allclose(mosaic[top:top + 5, left:left + 5], maps[..., channel])
    assert np.isnan(mosaic).sum() == mosaic.size - 3 * 25  # the rest is gaps
    chosen = plot_feature_maps(result, layer="conv", channels=[2, 0])
    assert [text.get_text().split()[0] for text in chosen.axes[0].texts] == ["#2", "#0"]
    with pytest.raises(KvisError, match=r"channels \[10\] out of range: conv has 10"):
        plot_feature_maps(result, channels=[10])


def test_figures_pick_the_layer_and_image_asked():
    first, second = np.zeros((2, 3, 3, 2), np.float32), np.ones((2, 3, 3, 2), np.float32)
    second[1] *= 5
    result = _result({"a": first, "net/b": second}, names=["x", "y"])
    fig = plot_layer_summary(result, layer="b", image=1)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), np.full((3, 3), 5.0))
    assert fig._suptitle.get_text() == "y at net/b"
    with pytest.raises(KvisError, match="hold 2 layers; pick one with layer=: a, net/b"):
        plot_feature_maps(result)
    with pytest.raises(KvisError, match="layer 'c' is not in these feature maps"):
        plot_feature_maps(result, layer="c")
    with pytest.raises(KvisError, match="image 2 is out of range"):
        plot_feature_maps(result, layer="a", image=2)


def test_layer_summary_shows_the_layer_statistics():
    maps = np.zeros((1, 4, 4, 3), np.float32)
    maps[..., 1] = 2.0
    summary = plot_layer_summary(_result({"a": maps}))
    np.testing.assert_allclose(summary.axes[0].images[0].get_array(), np.full((4, 4), 2 / 3))
    np.testing.assert_allclose(summary.axes[1].images[0].get_array(), np.full((4, 4), 2.0))
    assert "2/3 silent" in summary.axes[2].get_title()


def test_overview_lays_each_stage_mean_over_the_input_and_skips_padding(demo):
    from kvis.core.demo import demo_images
    from kvis.core.images import unit_range

    images, labels = demo_images()
    boot = load_image(images[np.flatnonzero(labels == 9)[0]], demo)
    maps = feature_maps(demo, boot, progress=False)
    overview = plot_feature_overview(maps, count=2)
    rows = [ax.get_title().split("\n")[0] for ax in overview.axes[::3]]
    assert rows == ["block1_conv2", "block2_conv2", "block3_conv1", "block3_pool"]
    assert all(ax.images for ax in overview.axes)  # no blank tile, no blank row
    mean, under = overview.axes[0].images
    np.testing.assert_allclose(under.get_array(), boot.pixels[..., 0] / 255.0)
    np.testing.assert_allclose(mean.get_array(), unit_range(maps["block1_conv2"][0].mean(-1)),
                               rtol=1e-6)
    assert under.get_zorder() < mean.get_zorder() and mean.get_alpha() == 0.6
    assert under.get_cmap().name == "gray"
    np.testing.assert_allclose(overview.axes[1].images[0].get_array().max(), 1.0)

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(1, name="pad")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    padded = keras.Model(inputs, keras.layers.MaxPooling2D(2, name="pool")(x))
    result = feature_maps(padded, np.ones((1, 16, 16, 3), np.float32), progress=False)
    assert list(result) == ["pad", "conv", "pool"] and result.stages == ("conv", "pool")
    titles = [ax.get_title() for ax in plot_feature_overview(result, count=1).axes]
    assert not any(title.startswith("pad") for title in titles)


def test_long_layer_paths_stay_inside_the_overview():
    long = "a_rather_long_feature_extractor_name/conv5_block3_out_with_suffix"
    result = _result({long: np.random.default_rng(0).uniform(size=(1, 4, 4, 3))})
    fig = plot_feature_overview(result, count=2)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    bounds = fig.bbox
    for ax in fig.axes:
        box = ax.title.get_window_extent(renderer)
        assert bounds.x0 <= box.x0 and box.x1 <= bounds.x1, ax.get_title()
    assert all(len(line) <= 18 for line in fig.axes[0].get_title().split("\n")[:-1])


def test_figures_draw_into_a_given_figure_and_in_a_notebook():
    from kvis.plot.figures import NotebookFigure

    result = _result({"a": np.ones((1, 3, 3, 2), np.float32)})
    fig = plot_layer_summary(result)
    assert fig._repr_png_().startswith(b"\x89PNG")
    outer = NotebookFigure()
    left, right = outer.subfigures(1, 2)
    assert plot_feature_maps(result, fig=left) is left and len(left.axes) == 2  # + colorbar
    assert plot_feature_overview(result, count=1, fig=right) is right


def test_a_squeeze_excitation_gate_is_not_a_stage():
    model = ops_model()
    gated = [path for path in spatial_layers(model)
             if tuple(model_graph(model).nodes[path].output.shape[1:3]) == (8, 8)][-1]
    assert stage_layers(model) == ["conv1", gated, "conv2"]  # not the 1x1 gate between
    maps = feature_maps(model, np.zeros((1, 16, 16, 3), np.float32), progress=False)
    assert maps.stages == ("conv1", gated, "conv2")
    assert len(maps) == len(spatial_layers(model)) == 12  # operation nodes included


@pytest.mark.integration
def test_stage_layers_of_vgg16_and_resnet50(vgg16, resnet50):
    assert stage_layers(vgg16) == ["block1_conv2", "block2_conv2", "block3_conv3",
                                   "block4_conv3", "block5_conv3", "block5_pool"]
    assert stage_layers(resnet50)[-4:] == ["conv2_block3_out", "conv3_block4_out",
                                           "conv4_block6_out", "conv5_block3_out"]


@pytest.mark.integration
def test_vgg16_feature_maps_match_the_layer_output(vgg16):
    x = np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32)
    maps = feature_maps(vgg16, x, ["block3_conv2", "block5_pool"], progress=False)
    alone = keras.Model(vgg16.input, vgg16.get_layer("block3_conv2").output)(x)
    np.testing.assert_allclose(maps["block3_conv2"], alone, rtol=1e-4, atol=1e-3)
    assert maps["block5_pool"].shape == (1, 7, 7, 512)
