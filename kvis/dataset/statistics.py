"""What a dataset scan says about a model's health (Zeiler & Fergus, ECCV 2014, section 4.1):
dead and rarely active channels, and the frequency content of the first layer's filters, where
the paper found filters that were a mix of extremely high and low frequencies with little
coverage of the mid frequencies, and aliasing from the first layer's large stride."""

from dataclasses import dataclass

import numpy as np

from kvis.core.anatomy import conv_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.layers.filters import conv_filters
from kvis.plot.figures import NotebookFigure, fit_texts, per_row

BANDS = ("low", "mid", "high")
PANEL_INCHES = 4.2  # the width of one layer's panel in `plot_statistics`


@dataclass(frozen=True)
class FilterSpectrum:
    """The frequency content of a conv layer's filters.

    Frequencies are in cycles per input pixel, from 0 to 0.5 (Nyquist of the input).

    Attributes:
        layer: the layer's path.
        stride: the layer's stride (rows): its output samples every `stride` pixels, so
            content above 0.5 / stride aliases.
        bands: float64 (F, 3) each filter's share of spectral energy in the low (< 1/6),
            mid (1/6 to 1/3) and high (> 1/3) thirds of the frequency range.
        aliased: float64 (F,) each filter's share of energy above 0.5 / stride along rows
            or columns.
    """

    layer: str
    stride: int
    bands: np.ndarray
    aliased: np.ndarray

    def summary(self):
        """One line: the mean share of each band and of aliased energy over the filters."""
        shares = ", ".join(f"{band} {share:.0%}" for band, share in zip(BANDS,
                                                                        self.bands.mean(axis=0)))
        return (f"{self.layer}: spectral energy {shares}; above the stride's Nyquist "
                f"(0.5/{self.stride}): {self.aliased.mean():.0%}")


def filter_spectrum(model, layer=None, *, size=64):
    """The frequency content of a conv layer's filters (default: the first conv layer).

    Each filter's kernel, summed over input channels by magnitude of its spectrum, is
    zero-padded to `size` x `size` and transformed with a 2-D FFT; energy is |F|^2 by radial
    frequency.

    Returns:
        A `FilterSpectrum`.

    Raises:
        KvisError: a model without conv layers, or a layer that is not a convolution.
    """
    convs = conv_layers(model)
    if not convs:
        raise KvisError(f"model {model.name!r} has no conv layers")
    node = model_graph(model).node(layer or convs[0])
    if node.path not in convs:
        raise KvisError(f"layer {node.path!r} ({type(node.layer).__name__}) is not a convolution")
    kernel = conv_filters(model, node.path).kernel.astype(np.float64)  # (kh, kw, in, out)
    energy = (np.abs(np.fft.fft2(kernel, s=(size, size), axes=(0, 1))) ** 2).sum(axis=2)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    radius = np.hypot(fy, fx)[..., None]
    total = np.maximum(energy.sum(axis=(0, 1)), 1e-30)
    edges = (0.0, 1 / 6, 1 / 3, np.inf)
    bands = np.stack([(energy * ((radius >= lo) & (radius < hi))).sum(axis=(0, 1)) / total
                      for lo, hi in zip(edges[:-1], edges[1:])], axis=-1)
    stride = int(node.layer.strides[0]) if hasattr(node.layer, "strides") else 1
    beyond = np.maximum(np.abs(fy), np.abs(fx))[..., None] > 0.5 / stride  # per axis
    aliased = (energy * beyond).sum(axis=(0, 1)) / total
    return FilterSpectrum(node.path, stride, bands, aliased)


def plot_statistics(result, *, fig=None, title=None):
    """Per layer, every channel's fraction of positions active, mean activation and peak,
    channels sorted by the fraction active, with the dead (never active) and rare channels
    counted and the dead ones marked (red crosses on the axis: their bars have no height).

    Args:
        result: a `kvis.dataset.scan.Scan`.
        fig: a Figure or SubFigure to draw in (a panel per layer, as many side by side as
            fit in `kvis.plot.figures.WIDEST`); by default a new Figure.
        title: the figure's title; default: the images and the source scanned.

    Returns:
        The Figure (or SubFigure) drawn in: per layer two Axes, the fraction active (bars)
        above the mean (bars) and peak (dots) activation of the same channels.


    Raises:
        KvisError: a scan without statistics (`kvis.scan(..., statistics=False)`).
    """
    stats = result.checked_stats("the statistics figure")
    count = len(result.layers)
    cols = per_row(count, PANEL_INCHES)
    rows = -(-count // cols)
    if fig is None:
        fig = NotebookFigure(figsize=(PANEL_INCHES * cols, 4.4 * rows + 0.4),
                             layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i in range(rows * cols):
        row, col = divmod(i, cols)
        top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
        if i < count:
            _layer_panel(top, bottom, result.layers[i], stats[result.layers[i]])
        else:
            top.set_axis_off()
            bottom.set_axis_off()
    fig.suptitle(title or f"activity over {result.images:,} images ({result.source})",
                 fontsize=10)
    return fit_texts(fig)


def _layer_panel(top, bottom, layer, stats):
    """One layer's channels, most active first: fraction active on `top`, mean and peak on
    `bottom`."""
    order = np.argsort(-stats.fraction_active, kind="stable")
    at = np.arange(len(order))
    active, dead = stats.fraction_active[order], stats.fraction_active[order] == 0
    top.bar(at, active, width=1.0, color="tab:blue")
    top.set_yscale("symlog", linthresh=1e-3)
    top.set_ylabel("fraction active", fontsize=8)
    top.set_title(f"{layer}: {len(stats.dead)} dead, {len(stats.rare)} rare of {len(order)}",
                  fontsize=9)
    bottom.bar(at, stats.mean[order], width=1.0, color="tab:gray", label="mean")
    bottom.plot(at, stats.peak[order], ".", color="tab:orange", markersize=3, label="peak")
    bottom.set_ylabel("activation", fontsize=8)
    bottom.set_xlabel("channel, most active first", fontsize=8)
    bottom.legend(fontsize=8, loc="upper right")
    for ax in (top, bottom):
        ax.tick_params(labelsize=8)
    if dead.any():  # their bars have no height: a cross on the axis marks each
        top.plot(at[dead], np.zeros(dead.sum()), "x", color="tab:red", markersize=5,
                 clip_on=False, label=f"dead ({dead.sum()})")
        top.legend(fontsize=8, loc="upper right")
