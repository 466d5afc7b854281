import keras
import numpy as np

from kvis.dataset.statistics import filter_spectrum


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
