"""The filter-norm constraint of Zeiler & Fergus (ECCV 2014, section 3)."""

import keras
from keras import ops

from kvis.core.errors import KvisError


@keras.saving.register_keras_serializable(package="kvis")
class FilterNormConstraint(keras.constraints.Constraint):
    """Renormalize every conv filter whose RMS exceeds a fixed radius back to that radius.

    Zeiler & Fergus (ECCV 2014, section 3): "we renormalize each filter in the convolutional
    layers whose RMS value exceeds a fixed radius of 10^-1 to this fixed radius", which keeps
    a few first-layer filters from dominating. A filter is `kernel[..., f]` of a channels-last
    kernel (kh, kw, in, out); its RMS is sqrt(mean(w^2)) over (kh, kw, in). Filters with
    RMS > radius are scaled by radius / RMS; the others are returned unchanged (bit for bit).
    Unlike `keras.constraints.MaxNorm` (an L2 norm), the bound is on the root *mean* square,
    so the same radius suits filters of any size, as in the paper.

    Args:
        radius: the largest RMS a filter may keep, > 0 (the paper's 0.1 by default).

    Raises:
        KvisError: a radius that is not a positive number.

    Example:
        >>> keras.layers.Conv2D(96, 7, strides=2,
        ...                     kernel_constraint=kvis.FilterNormConstraint(0.1))
    """

    def __init__(self, radius=0.1):
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
            raise KvisError(f"the filter-norm radius must be a positive number; got {radius!r}")
        self.radius = float(radius)

    def __call__(self, w):
        """The kernel with every filter's RMS clipped to the radius.

        Args:
            w: a kernel (..., out) (a conv kernel (kh, kw, in, out), a dense kernel
                (in, out)); the last axis indexes the filters.

        Returns:
            A tensor of `w`'s shape and dtype.
        """
        w = ops.convert_to_tensor(w)
        axes = tuple(range(len(w.shape) - 1))
        rms = ops.sqrt(ops.mean(ops.square(w), axis=axes, keepdims=True))
        radius = ops.cast(self.radius, w.dtype)
        return ops.where(rms > radius, w * (radius / ops.maximum(rms, radius)), w)

    def get_config(self):
        """The constraint's settings: `{"radius": float}`."""
        return {"radius": self.radius}
