"""Filters: the convolution kernels of a layer as images."""

import warnings
from dataclasses import dataclass

import keras
import numpy as np

from kvis.core.anatomy import conv_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.models import expects_bgr
from kvis.core.vocabulary import FILTER_VIEWS
from kvis.plot.figures import WIDEST, NotebookFigure, fit_texts, image_grid


@dataclass(frozen=True)
class Filters:
    """The filters (kernels) of one convolution layer, ready to draw.

    Attributes:
        kernel: float32 (kh, kw, in_channels, filters). A depthwise kernel (kh, kw, c, m) is
            given as (kh, kw, 1, c*m): every filter sees one input channel. A separable
            convolution's is the full kernel it equals, its depthwise kernel followed by its
            pointwise one: (kh, kw, c, filters).
        layer: the layer's path.
        bgr: the 3 input channels are BGR (a caffe-style model such as VGG16 or ResNet50,
            from the model's preprocessing); they are drawn as RGB.
        model: the model's name.
    """

    kernel: np.ndarray
    layer: str
    bgr: bool = False
    model: str = ""

    @property
    def scale(self):
        """The largest |weight|: `plot_filters` draws every filter on [-scale, scale]."""
        return float(np.abs(self.kernel).max()) or 1.0


def conv_filters(model, layer):
    """The filters of a 2-D convolution layer.

    Args:
        model: a Keras model.
        layer: the layer's path (a unique suffix works too).

    Returns:
        A `Filters`; `bgr` is True where the model's preprocessing reverses the channels
        and the kernel has 3 input channels.

    Raises:
        KvisError: the layer is not a Conv2D, DepthwiseConv2D or SeparableConv2D; the message
            lists conv layers.

    Example:
        >>> kvis.plot_filters(kvis.conv_filters(model, "block1_conv1"))
    """
    node = model_graph(model).node(layer)
    if isinstance(node.layer, keras.layers.DepthwiseConv2D):
        kernel = np.asarray(node.layer.kernel)
        kernel = kernel.reshape(*kernel.shape[:2], 1, -1)
    elif isinstance(node.layer, keras.layers.Conv2D):
        kernel = np.asarray(node.layer.kernel)
    elif isinstance(node.layer, keras.layers.SeparableConv2D):
        kernel = _separable_kernel(node.layer)
    else:
        convs = conv_layers(model)
        hint = (f"; conv layers: {', '.join(convs[:8])}{' ...' if len(convs) > 8 else ''}"
                if convs else "; the model has no conv layers")
        raise KvisError(f"layer {node.path!r} ({type(node.layer).__name__}) has no 2-D "
                        f"convolution kernel{hint}")
    return Filters(kernel.astype(np.float32), node.path,
                   kernel.shape[2] == 3 and expects_bgr(model), model.name)


def _separable_kernel(layer):
    """The (kh, kw, c, filters) kernel of one convolution equal to a SeparableConv2D: depthwise
    output channel c*m + j feeds the pointwise kernel's row c*m + j."""
    depthwise = np.asarray(layer.depthwise_kernel)  # (kh, kw, c, m)
    pointwise = np.asarray(layer.pointwise_kernel)[0, 0]  # (c*m, filters)
    channels, multiplier = depthwise.shape[2:]
    return np.einsum("hwcm,cmf->hwcf", depthwise,
                     pointwise.reshape(channels, multiplier, -1))


def plot_filters(result, *, mode="auto", count=64, inputs=8, fig=None, title=None):
    """A layer's filters as images.

    Args:
        result: a `Filters` (from `conv_filters`).
        mode: "grid" (each filter one tile: colour for 3 input channels, gray for 1),
            "channels" (a row per filter, a tile per input channel), "summary" (for deep
            layers: the filters x channels matrix of kernel norms, and the strongest filters
            at their dominant input channel), or "auto" (grid for 1 or 3 input channels,
            else summary).
        count: show at most this many filters (in index order; by norm in summary).
        inputs: how many input channels each filter's row shows in "channels" mode (the
            first ones; when some are left out, the title says which and a warning is given).
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: figure title (default: the model, the layer and the kernel's shape).

    Returns:
        A Figure. Weights are shown on one symmetric scale: mid-gray (or white) is zero.

    Raises:
        KvisError: an unknown mode, or a grid of filters with other than 1 or 3 channels.
    """
    kernel = np.asarray(result.kernel, np.float32)
    if kernel.ndim != 4:
        raise KvisError(f"a conv kernel is (kh, kw, in, out); got shape {kernel.shape}")
    if mode not in FILTER_VIEWS:
        raise KvisError(f"unknown filter view {mode!r}; choose from {', '.join(FILTER_VIEWS)}")
    channels = kernel.shape[2]
    if mode == "auto":
        mode = "grid" if channels in (1, 3) else "summary"
    if mode == "grid" and channels not in (1, 3):
        raise KvisError(f"a grid shows filters with 1 or 3 input channels; this layer has "
                        f"{channels}: use the channels or summary view")
    title = title or f"{result.model} {result.layer} {kernel.shape}".strip()
    scale = result.scale
    shown = range(min(count, kernel.shape[3]))
    if mode == "grid":
        return _grid(kernel, shown, scale, result.bgr, title, fig)
    if mode == "channels":
        return _channels(kernel, shown, inputs, scale, title, fig, result.layer)
    return _summary(kernel, count, scale, title, fig)



def _grid(kernel, shown, scale, bgr, title, fig):
    if kernel.shape[2] == 3:
        colour = kernel[:, :, ::-1] if bgr else kernel
        tiles = [colour[..., f] / (2 * scale) + 0.5 for f in shown]
    else:
        tiles = [kernel[:, :, 0, f] for f in shown]
    return image_grid(tiles, titles=[f"#{f}" for f in shown], cmap="gray", vmin=-scale,
                      vmax=scale, title=title, tile_inches=0.9, fig=fig)


def _channels(kernel, shown, inputs, scale, title, fig, layer):
    columns = range(min(inputs, kernel.shape[2]))
    if len(columns) < kernel.shape[2]:
        left_out = f"input channels 0-{len(columns) - 1} of {kernel.shape[2]}"
        warnings.warn(f"{layer}: each filter's row shows its {left_out} (inputs="
                      f"{len(columns)}; --inputs on the command line)", stacklevel=3)
        title = f"{title}, {left_out}"
    tiles = [kernel[:, :, c, f] for f in shown for c in columns]
    labels = [f"#{f} in {c}" for f in shown for c in columns]
    return image_grid(tiles, titles=labels, cols=len(columns), cmap="RdBu_r", vmin=-scale,
                      vmax=scale, title=title, tile_inches=0.9, colorbar=True, fig=fig)


def _summary(kernel, count, scale, title, fig):
    norms = np.sqrt((kernel ** 2).sum(axis=(0, 1)))  # (in, out)
    by_norm = np.argsort(-norms.sum(axis=0), kind="stable")
    if fig is None:
        fig = NotebookFigure(figsize=(WIDEST, 5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=(1.0, 1.1))
    ax = left.subplots()
    image = ax.imshow(norms[:, by_norm], aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xlabel("filter, strongest first")
    ax.set_ylabel("input channel")
    ax.set_title("kernel norm per (input channel, filter)", fontsize=9)
    left.colorbar(image, ax=ax)
    strongest = by_norm[:min(count, 16)]
    dominant = [int(np.argmax(norms[:, f])) for f in strongest]
    image_grid([kernel[:, :, c, f] for c, f in zip(dominant, strongest)],
               titles=[f"#{f} in {c}" for c, f in zip(dominant, strongest)], cols=4,
               cmap="RdBu_r", vmin=-scale, vmax=scale, colorbar=True, fig=right)
    right.suptitle("strongest filters at their dominant input channel", fontsize=9)
    if title:
        fig.suptitle(title)
    return fit_texts(fig)
