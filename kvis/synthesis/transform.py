"""Transformation robustness: the random jitter, scaling and rotation an image gets each step,
and the periodic blur, all in TensorFlow ops that XLA compiles."""

import math

import numpy as np
import tensorflow as tf


def moves(rngs, steps, settings):
    """float32 (B, steps, 4): per image and step (dy, dx, scale, degrees), drawn from each
    image's own stream (its rng) by `settings`' jitter, scale and rotate."""
    drawn = []
    for rng in rngs:
        shift = rng.integers(-settings.jitter, settings.jitter + 1, (steps, 2))
        zoom = rng.uniform(1 - settings.scale, 1 + settings.scale, (steps, 1))
        angle = rng.uniform(-settings.rotate, settings.rotate, (steps, 1))
        drawn.append(np.concatenate([shift, zoom, angle], axis=1))
    return np.stack(drawn).astype(np.float32)


def transform(images, moves):
    """Shift, scale and rotate each image about its centre, sampling bilinearly.

    Args:
        images: float32 (B, H, W, C).
        moves: float32 (B, 4), each image's (dy, dx, scale, degrees).

    Written with gathers rather than ImageProjectiveTransform, which XLA cannot compile.
    Borders mirror, so no constant frame leaks into the image.
    """
    height, width = images.shape[1:3]
    dy, dx, zoom, degrees = (m[:, None, None] for m in tf.unstack(moves, axis=1))
    radians = degrees * (math.pi / 180.0)
    cos, sin = tf.cos(radians) / zoom, tf.sin(radians) / zoom
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32),
                             np.arange(width, dtype=np.float32), indexing="ij")
    # Each output pixel reads from its position moved back by the shift, then rotated
    # and scaled about the centre.
    y = rows - (height - 1) / 2.0 - dy
    x = cols - (width - 1) / 2.0 - dx
    source_x = _mirror(cos * x + sin * y + (width - 1) / 2.0, width)
    source_y = _mirror(-sin * x + cos * y + (height - 1) / 2.0, height)
    return _bilinear(images, source_y, source_x)


def blur(images, sigma):
    """Gaussian blur of images (B, H, W, C) with `sigma` in pixels, reflecting at borders."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
    channels = images.shape[-1]
    kernel = tf.constant(np.tile(kernel[:, :, None, None], (1, 1, channels, 1)), tf.float32)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")


def _mirror(coordinate, size):
    """Fold coordinates into [0, size - 1] by mirroring at the borders."""
    if size == 1:
        return tf.zeros_like(coordinate)
    period = 2.0 * (size - 1)
    folded = tf.math.floormod(coordinate, period)
    return tf.where(folded > size - 1, period - folded, folded)


def _bilinear(images, y, x):
    """Sample images (B, H, W, C) at real-valued positions y, x (B, H', W')."""
    height, width = images.shape[1:3]
    y0, x0 = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]

    def at(row, col):
        row = tf.clip_by_value(tf.cast(row, tf.int32), 0, height - 1)
        col = tf.clip_by_value(tf.cast(col, tf.int32), 0, width - 1)
        return tf.gather_nd(images, tf.stack([row, col], axis=-1), batch_dims=1)

    top = (1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1)
    bottom = (1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)
    return (1 - wy) * top + wy * bottom
