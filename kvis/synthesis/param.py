"""Parameterizations: how an optimized image is written as numbers that gradient ascent moves.

A parameterization holds only what its image size fixes; the numbers themselves are a tensor
passed in and out, so that one compiled optimization step serves every call of that size.
"Pixel": each pixel a number, squashed into [0, 1]. "fft": Fourier coefficients scaled by
1/frequency in decorrelated colour (Olah et al. 2017), which spreads each step's change over
natural colour directions and low frequencies first.
"""

import math

import numpy as np
import tensorflow as tf

# Square root of the colour correlation of ImageNet images (Olah et al., Lucid): optimizing in
# this decorrelated space spreads each step's change over natural colour directions.
_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                        np.float32)
_COLOUR = _COLOUR_SQRT / np.max(np.linalg.norm(_COLOUR_SQRT, axis=0))


class Pixels:
    """Each pixel a number, squashed into [0, 1] by a sigmoid.

    Args:
        shape: `(height, width, channels)` of one image.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)

    def start(self, rngs, noise):
        """float32 (B, H, W, C): Gaussian numbers of deviation `noise`, one image per rng."""
        return tf.constant(np.stack([rng.normal(0, noise, self.shape) for rng in rngs])
                           .astype(np.float32))

    def image(self, value):
        """The images (B, H, W, C) in [0, 1] that `value` stands for."""
        return tf.sigmoid(value)

    def value_of(self, images):
        """The numbers that stand for `images` (B, H, W, C) in [0, 1]."""
        return _logit(images)


class Spectrum:
    """Fourier coefficients scaled by 1/frequency, in decorrelated colour (Olah et al. 2017).

    Args:
        shape: `(height, width, channels)` of one image; the numbers of B images are float32
            (B, C, H, W // 2 + 1, 2), real and imaginary parts.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)
        height, width = self.shape[:2]
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.rfftfreq(width)[None, :]
        frequencies = np.sqrt(fx ** 2 + fy ** 2)
        self.scale = tf.constant(1.0 / np.maximum(frequencies, 1.0 / max(height, width))
                                 * math.sqrt(height * width), tf.complex64)

    def start(self, rngs, noise):
        height, width, channels = self.shape
        coefficients = (channels, height, width // 2 + 1, 2)
        return tf.constant(np.stack([rng.normal(0, noise, coefficients) for rng in rngs])
                           .astype(np.float32))

    def image(self, value):
        spectrum = tf.complex(value[..., 0], value[..., 1]) * self.scale
        planes = tf.signal.irfft2d(spectrum, fft_length=self.shape[:2])  # (B, C, H, W)
        return tf.sigmoid(_to_rgb(tf.transpose(planes, (0, 2, 3, 1)) / 4.0))

    def value_of(self, images):
        planes = tf.transpose(_from_rgb(_logit(images)) * 4.0, (0, 3, 1, 2))
        spectrum = tf.signal.rfft2d(planes, fft_length=self.shape[:2]) / self.scale
        return tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)], -1)


BY_NAME = {"fft": Spectrum, "pixel": Pixels}


def _to_rgb(values):
    if values.shape[-1] != 3:
        return values
    return tf.einsum("bhwc,dc->bhwd", values, tf.constant(_COLOUR))


def _from_rgb(values):
    if values.shape[-1] != 3:
        return values
    return tf.einsum("bhwc,dc->bhwd", values, tf.constant(np.linalg.inv(_COLOUR)))


def _logit(images):
    images = tf.clip_by_value(tf.convert_to_tensor(images, tf.float32), 1e-4, 1 - 1e-4)
    return tf.math.log(images / (1 - images))
