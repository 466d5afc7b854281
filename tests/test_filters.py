import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.core.anatomy import conv_layers
from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.layers.filters import Filters, conv_filters, plot_filters


def test_conv_filters_hold_the_layer_kernel(tiny):
    result = conv_filters(tiny, "conv2")
    np.testing.assert_array_equal(result.kernel, tiny.get_layer("conv2").get_weights()[0])
    assert result.layer == "conv2" and result.model == "tiny" and not result.bgr
    assert conv_layers(tiny) == ["conv1", "conv2"]


def test_bgr_comes_from_the_model_preprocessing(tiny):
    assert not conv_filters(tiny, "conv1").bgr  # preprocessing unknown: as given
    configure_model(tiny, preprocessing="caffe")
    assert conv_filters(tiny, "conv1").bgr
    assert not conv_filters(tiny, "conv2").bgr  # 4 input channels: not an image's
    configure_model(tiny, preprocessing="tf")
    assert not conv_filters(tiny, "conv1").bgr


def test_nested_conv_layer_by_suffix():
    from conftest import nested_functional, tiny_base

    base = tiny_base()
    result = conv_filters(nested_functional(base), "conv2")
    assert result.layer == "base/conv2"
    np.testing.assert_array_equal(result.kernel, base.get_layer("conv2").kernel.numpy())


def test_depthwise_kernel_becomes_one_filter_per_channel():
    inputs = keras.Input((8, 8, 3))
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")
    model = keras.Model(inputs, depthwise(inputs))
    kernel = conv_filters(model, "dw").kernel
    assert kernel.shape == (3, 3, 1, 6)
    np.testing.assert_array_equal(kernel[:, :, 0, 5], depthwise.kernel.numpy()[:, :, 2, 1])


def test_a_separable_kernel_is_the_full_convolution_it_equals():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((9, 9, 3))
    separable = keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, use_bias=False,
                                             name="sep")
    model = keras.Model(inputs, separable(inputs))
    kernel = conv_filters(model, "sep").kernel
    assert kernel.shape == (3, 3, 3, 4)
    x = np.random.default_rng(5).normal(size=(2, 9, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(tf.nn.conv2d(x, kernel, 1, "VALID").numpy(),
                               model.predict(x, verbose=0), atol=1e-5)


def test_non_conv_layers_are_refused_with_the_conv_layers_listed(tiny):
    with pytest.raises(KvisError, match=r"'gap' .* no 2-D convolution kernel; conv layers: conv1"):
        conv_filters(tiny, "gap")
    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    with pytest.raises(KvisError, match="the model has no conv layers"):
        conv_filters(dense, "d")


def test_colour_grid_shows_each_filter_on_one_symmetric_scale():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 5)).astype(np.float32)
    scale = np.abs(kernel).max()
    fig = plot_filters(Filters(kernel, "conv", bgr=True, model="m"))
    shown = fig.axes[4].images[0].get_array()
    np.testing.assert_allclose(shown, kernel[:, :, ::-1, 4] / (2 * scale) + 0.5, rtol=1e-6)
    assert fig._suptitle.get_text() == "m conv (3, 3, 3, 5)"
    rgb = plot_filters(Filters(kernel, "conv"), title="as given")
    np.testing.assert_allclose(rgb.axes[4].images[0].get_array(),
                               kernel[:, :, :, 4] / (2 * scale) + 0.5, rtol=1e-6)


def test_gray_grid_draws_into_a_given_figure():
    from kvis.plot.figures import NotebookFigure

    kernel = np.random.default_rng(2).normal(size=(3, 3, 1, 4)).astype(np.float32)
    outer = NotebookFigure()
    sub = outer.subfigures(1, 2)[1]
    assert plot_filters(Filters(kernel, "c"), fig=sub) is sub
    np.testing.assert_array_equal(sub.axes[2].images[0].get_array(), kernel[:, :, 0, 2])
    assert sub.axes[2].images[0].get_clim() == (-np.abs(kernel).max(), np.abs(kernel).max())


def test_channels_view_lays_out_filters_by_input_channel_and_says_what_it_leaves_out():
    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 2)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"c: each filter's row shows its input channels 0-2 "
                                         r"of 4 \(inputs=3; --inputs"):
        fig = plot_filters(Filters(kernel, "c"), mode="channels", inputs=3)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == 6 and tiles[4].get_title() == "#1 in 1"
    np.testing.assert_array_equal(tiles[4].images[0].get_array(), kernel[:, :, 1, 1])
    assert fig._suptitle.get_text().replace("\n", " ").endswith("input channels 0-2 of 4")
    scale = float(np.abs(kernel).max())
    assert Filters(kernel, "c").scale == scale
    assert tiles[0].images[0].get_clim() == (-scale, scale)  # one scale for every filter


def test_summary_shows_kernel_norms_strongest_filter_first():
    kernel = np.ones((3, 3, 4, 3), np.float32)
    kernel[..., 2] *= 3.0
    kernel[:, :, 1, 0] = 0.0
    fig = plot_filters(Filters(kernel, "c"))  # auto: 4 input channels -> summary
    norms = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(norms[:, 0], np.full(4, 9.0))  # filter 2 first: 3 * sqrt(9)
    np.testing.assert_allclose(norms[:, 2], [3.0, 0.0, 3.0, 3.0])  # filter 0 last
    assert [ax.get_title() for ax in fig.axes if ax.get_title().startswith("#")][0] == "#2 in 0"


def test_bad_views_are_refused():
    with pytest.raises(KvisError, match="use the channels or summary view"):
        plot_filters(Filters(np.zeros((3, 3, 8, 2)), "c"), mode="grid")
    with pytest.raises(KvisError, match=r"\(kh, kw, in, out\)"):
        plot_filters(Filters(np.zeros((3, 3, 8)), "c"))
    with pytest.raises(KvisError, match="unknown filter view 'tiles'"):
        plot_filters(Filters(np.zeros((3, 3, 3, 2)), "c"), mode="tiles")
