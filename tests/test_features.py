import numpy as np
import pytest

from kvis.errors import KvisError
from kvis.features import (
    feature_maps,
    plot_feature_maps,
    plot_feature_overview,
    plot_layer_summary,
    rank_channels,
    spatial_layers,
    stage_layers,
)


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


def test_feature_maps_equal_a_numpy_convolution(tiny, images):
    kernel, bias = (w.numpy() for w in tiny.get_layer("conv1").weights)
    conv1 = np.maximum(_conv_same(images, kernel, bias), 0)
    pool1 = conv1.reshape(2, 8, 2, 8, 2, 4).max(axis=(2, 4))
    maps = feature_maps(tiny, images, ["conv1", "pool1"])
    np.testing.assert_allclose(maps["conv1"], conv1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps["pool1"], pool1, rtol=1e-5, atol=1e-5)


def test_all_layers_means_every_spatial_layer(tiny, images):
    assert spatial_layers(tiny) == ["conv1", "pool1", "conv2"]
    assert list(feature_maps(tiny, images)) == ["conv1", "pool1", "conv2"]


def test_non_spatial_layer_and_wrong_input_are_refused(tiny, images):
    with pytest.raises(KvisError, match=r"'gap' \(GlobalAveragePooling2D\).*no spatial"):
        feature_maps(tiny, images, "gap")
    with pytest.raises(KvisError, match=r"do not fit the model input \(N, 16, 16, 3\)"):
        feature_maps(tiny, images[:, :8], "conv1")


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
    fig = plot_feature_maps(maps, top=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split()[0] for t in titles] == ["#9", "#8", "#7"]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), maps[..., 9])
    chosen = plot_feature_maps(maps, channels=[2, 0])
    assert [ax.get_title().split()[0] for ax in chosen.axes if ax.get_title()] == ["#2", "#0"]
    with pytest.raises(KvisError, match=r"channels \[10\] out of range"):
        plot_feature_maps(maps, channels=[10])


def test_layer_summary_and_overview_show_the_layer_statistics():
    maps = np.zeros((4, 4, 3), np.float32)
    maps[..., 1] = 2.0
    summary = plot_layer_summary(maps)
    np.testing.assert_allclose(summary.axes[0].images[0].get_array(), np.full((4, 4), 2 / 3))
    assert "2/3 silent" in summary.axes[2].get_title()
    overview = plot_feature_overview({"a": maps, "b": maps[:2, :2]}, top=2)
    titles = [ax.get_title() for ax in overview.axes]
    assert titles[0].startswith("a 4x4x3") and titles[1].startswith("#1") and \
        titles[3].startswith("b 2x2x3")


def test_stage_layers_of_the_demo_model(demo):
    assert stage_layers(demo) == ["block1_conv2", "block2_conv2", "block3_conv1", "block3_pool"]


@pytest.mark.integration
def test_stage_layers_of_vgg16_and_resnet50(vgg16, resnet50):
    assert stage_layers(vgg16) == ["block1_conv2", "block2_conv2", "block3_conv3",
                                   "block4_conv3", "block5_conv3", "block5_pool"]
    assert stage_layers(resnet50)[-4:] == ["conv2_block3_out", "conv3_block4_out",
                                           "conv4_block6_out", "conv5_block3_out"]


@pytest.mark.integration
def test_vgg16_feature_maps_match_the_layer_output(vgg16):
    import keras

    x = np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32)
    maps = feature_maps(vgg16, x, ["block3_conv2", "block5_pool"])
    alone = keras.Model(vgg16.input, vgg16.get_layer("block3_conv2").output)(x)
    np.testing.assert_allclose(maps["block3_conv2"], alone, rtol=1e-4, atol=1e-3)
    assert maps["block5_pool"].shape == (1, 7, 7, 512)


def test_figures_render_in_a_notebook_without_pyplot():
    fig = plot_layer_summary(np.ones((3, 3, 2), np.float32))
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_a_model_without_spatial_layers_is_refused():
    import keras

    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="mlp")
    with pytest.raises(KvisError, match="'mlp' has no layers with spatial feature maps"):
        feature_maps(dense, np.zeros((1, 4), np.float32))
