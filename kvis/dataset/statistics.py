"""What a dataset scan says about a model's health (Zeiler & Fergus, ECCV 2014, section 4.1):
dead and rarely active channels, and the frequency content of the first layer's filters, where
the paper found filters that were a mix of extremely high and low frequencies with little
coverage of the mid frequencies, and aliasing from the first layer's large stride."""

from dataclasses import dataclass

import numpy as np

from kvis.core.anatomy import conv_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.plot.figures import NotebookFigure

BANDS = ("low", "mid", "high")


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
    kernel = np.asarray(node.layer.kernel, np.float64)  # (kh, kw, in, out)
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
    """Per layer, the fraction of positions each channel is active, sorted, with the dead
    (never active) and rare channels counted.

    Args:
        result: a `kvis.dataset.scan.Scan`.
        fig: a Figure or SubFigure to draw in (a panel per layer); by default a new Figure.
        title: the figure's title; default: the images and the source scanned.

    Returns:
        The Figure (or SubFigure) drawn in.
    """
    if fig is None:
        fig = NotebookFigure(figsize=(4.2 * len(result.layers), 3.2), layout="constrained")
    axes = fig.subplots(1, len(result.layers), squeeze=False)[0]
    for ax, layer in zip(axes, result.layers):
        stats = result.stats[layer]
        active = np.sort(stats.fraction_active)[::-1]
        ax.bar(np.arange(len(active)), active, width=1.0,
               color=["tab:red" if a == 0 else "tab:blue" for a in active])
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"{layer}: {len(stats.dead)} dead, {len(stats.rare)} rare of "
                     f"{len(active)}", fontsize=9)
        ax.set_xlabel("channel, most active first", fontsize=8)
        ax.set_ylabel("fraction of positions active", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or f"activity over {result.images} images ({result.source})", fontsize=10)
    return fig
