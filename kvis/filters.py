"""Filters: the convolution kernels of a layer as images."""

import keras
import numpy as np

from kvis.anatomy import conv_layers
from kvis.errors import KvisError
from kvis.graph import model_graph
from kvis.plot import NotebookFigure, image_grid

MODES = ("auto", "grid", "channels", "summary")


def conv_kernel(model, layer):
    """The kernel of a 2-D convolution layer.

    Args:
        model: a Keras model.
        layer: the layer's path.

    Returns:
        float32 (kh, kw, in_channels, filters). A depthwise kernel (kh, kw, c, m) is returned
        as (kh, kw, 1, c*m): every filter sees one input channel.

    Raises:
        KvisError: the layer is not a Conv2D or DepthwiseConv2D; the message lists conv layers.
    """
    node = model_graph(model).node(layer)
    if isinstance(node.layer, keras.layers.DepthwiseConv2D):
        kernel = np.asarray(node.layer.kernel)
        return kernel.reshape(*kernel.shape[:2], 1, -1)
    if isinstance(node.layer, keras.layers.Conv2D):
        return np.asarray(node.layer.kernel)
    convs = conv_layers(model)
    hint = f"; conv layers: {', '.join(convs[:8])}{' ...' if len(convs) > 8 else ''}" if convs \
        else "; the model has no conv layers"
    raise KvisError(f"layer {node.path!r} ({type(node.layer).__name__}) has no 2-D convolution "
                    f"kernel{hint}")


def plot_filters(kernel, *, mode="auto", max_filters=64, max_channels=8, bgr=False, title=None):
    """A layer's filters as images.

    Args:
        kernel: (kh, kw, in_channels, filters), e.g. from `conv_kernel`.
        mode: "grid" (each filter one tile: colour for 3 input channels, gray for 1),
            "channels" (a row per filter, a tile per input channel), "summary" (for deep
            layers: the filters x channels matrix of kernel norms, and the strongest filters
            at their dominant input channel), or "auto" (grid for 1 or 3 input channels,
            else summary).
        max_filters: show at most this many filters (in index order; by norm in summary).
        max_channels: input channels per row in "channels" mode.
        bgr: the kernel's 3 input channels are BGR (caffe-style models such as VGG16).
        title: figure title.

    Returns:
        A Figure. Weights are shown on one symmetric scale: mid-gray (or white) is zero.
    """
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 4:
        raise KvisError(f"a conv kernel is (kh, kw, in, out); got shape {kernel.shape}")
    if mode not in MODES:
        raise KvisError(f"unknown filter view {mode!r}; choose from {', '.join(MODES)}")
    channels = kernel.shape[2]
    if mode == "auto":
        mode = "grid" if channels in (1, 3) else "summary"
    if mode == "grid" and channels not in (1, 3):
        raise KvisError(f"a grid shows filters with 1 or 3 input channels; this layer has "
                        f"{channels}: use the channels or summary view")
    scale = float(np.abs(kernel).max()) or 1.0
    shown = range(min(max_filters, kernel.shape[3]))
    if mode == "grid":
        return _grid(kernel, shown, scale, bgr, title)
    if mode == "channels":
        return _channels(kernel, shown, max_channels, scale, title)
    return _summary(kernel, max_filters, scale, title)


def _grid(kernel, shown, scale, bgr, title):
    if kernel.shape[2] == 3:
        colour = kernel[:, :, ::-1] if bgr else kernel
        tiles = [colour[..., f] / (2 * scale) + 0.5 for f in shown]
    else:
        tiles = [kernel[:, :, 0, f] for f in shown]
    return image_grid(tiles, titles=[f"#{f}" for f in shown], cmap="gray", vmin=-scale,
                      vmax=scale, title=title, tile_inches=0.9)


def _channels(kernel, shown, max_channels, scale, title):
    inputs = range(min(max_channels, kernel.shape[2]))
    tiles = [kernel[:, :, c, f] for f in shown for c in inputs]
    labels = [f"#{f} in {c}" for f in shown for c in inputs]
    return image_grid(tiles, titles=labels, cols=len(inputs), cmap="RdBu_r", vmin=-scale,
                      vmax=scale, title=title, tile_inches=0.9, colorbar=True)


def _summary(kernel, max_filters, scale, title):
    norms = np.sqrt((kernel ** 2).sum(axis=(0, 1)))  # (in, out)
    by_norm = np.argsort(-norms.sum(axis=0), kind="stable")
    fig = NotebookFigure(figsize=(11, 5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=(1.0, 1.1))
    ax = left.subplots()
    image = ax.imshow(norms[:, by_norm], aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xlabel("filter, strongest first")
    ax.set_ylabel("input channel")
    ax.set_title("kernel norm per (input channel, filter)", fontsize=9)
    left.colorbar(image, ax=ax)
    strongest = by_norm[:min(max_filters, 16)]
    dominant = [int(np.argmax(norms[:, f])) for f in strongest]
    image_grid([kernel[:, :, c, f] for c, f in zip(dominant, strongest)],
               titles=[f"#{f} in {c}" for c, f in zip(dominant, strongest)], cols=4,
               cmap="RdBu_r", vmin=-scale, vmax=scale, colorbar=True, fig=right)
    right.suptitle("strongest filters at their dominant input channel", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
