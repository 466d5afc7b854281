import keras
import numpy as np

from kvis.dataset.scan import LayerStats, Scan
from kvis.dataset.statistics import filter_spectrum, plot_statistics


def _first_layer(kernels, strides=1):
    inputs = keras.Input((16, 16, 1))
    conv = keras.layers.Conv2D(kernels.shape[-1], kernels.shape[:2], strides=strides,
                               name="conv")
    model = keras.Model(inputs, conv(inputs))
    conv.kernel.assign(kernels)
    return model


def test_band_shares_of_known_filters():
    flat = np.ones((5, 5, 1, 1))  # a box blur: low frequencies
    checker = np.indices((5, 5)).sum(axis=0) % 2 * 2 - 1.0  # +-1 checkerboard: highest
    spectrum = filter_spectrum(_first_layer(np.concatenate([flat, checker[..., None, None]], -1)))
    assert spectrum.bands.shape == (2, 3)
    np.testing.assert_allclose(spectrum.bands.sum(axis=1), 1.0, rtol=1e-9)
    assert spectrum.bands[0, 0] > 0.8 and spectrum.bands[1, 2] > 0.8
    assert "spectral energy low" in spectrum.summary()


def test_content_above_the_strides_nyquist_is_aliased():
    stripes = np.cos(np.pi / 2 * np.arange(8))[:, None] * np.ones((8, 8))  # 0.25 cycles/pixel
    kernel = stripes[..., None, None]
    assert filter_spectrum(_first_layer(kernel, strides=1)).aliased[0] < 0.01
    # with stride 4, everything above 0.125 cycles/pixel aliases: most of this filter
    assert filter_spectrum(_first_layer(kernel, strides=4)).aliased[0] > 0.8


def test_the_figure_plots_fraction_mean_and_peak_and_marks_dead_channels():
    stats = LayerStats(10, np.array([5.0, 0.0, 20.0]), np.float32([2.0, 0.0, 9.0]),
                       np.array([4, 0, 7]))
    found = Scan("m", ("conv",), 9, {}, {"conv": stats}, "hand", 1)
    top, bottom = plot_statistics(found).axes
    order = [2, 0, 1]  # most active first
    np.testing.assert_allclose([bar.get_height() for bar in top.patches], [0.7, 0.4, 0.0])
    np.testing.assert_allclose([bar.get_height() for bar in bottom.patches],
                               stats.mean[order])
    peaks = [line for line in bottom.lines if line.get_label() == "peak"][0]
    np.testing.assert_allclose(peaks.get_ydata(), stats.peak[order])
    dead = [line for line in top.lines if line.get_label().startswith("dead")][0]
    np.testing.assert_array_equal(dead.get_xdata(), [2])  # the dead channel, drawn visibly
    assert dead.get_marker() == "x" and dead.get_label() == "dead (1)"


def test_a_separable_convolution_has_the_spectrum_of_its_equivalent_convolution():
    inputs = keras.Input((12, 12, 3))
    separable = keras.layers.SeparableConv2D(5, 4, depth_multiplier=2, use_bias=False,
                                             name="sep")
    conv = keras.layers.Conv2D(5, 4, use_bias=False, name="conv")
    model = keras.Model(inputs, [separable(inputs), conv(inputs)])
    depthwise = np.array(separable.depthwise_kernel)
    # one kernel: input channel i reaches output o through its multiplied copies
    kernel = np.einsum("hwim,imo->hwio", depthwise,
                       np.array(separable.pointwise_kernel).reshape(3, 2, 5))
    conv.kernel.assign(kernel)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype(np.float32)
    by_separable, by_conv = model(x)
    np.testing.assert_allclose(by_separable, by_conv, atol=1e-5)
    found, expected = filter_spectrum(model, "sep"), filter_spectrum(model, "conv")
    np.testing.assert_allclose(found.bands, expected.bands, atol=1e-6)
    np.testing.assert_allclose(found.aliased, expected.aliased, atol=1e-6)
