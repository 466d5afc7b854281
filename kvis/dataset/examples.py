"""The top-9 figure of Zeiler & Fergus (ECCV 2014, Fig. 2): for each feature map, its strongest
activations over a dataset, each as its deconvnet projection beside the image patch behind it.

The projections are computed after the scan, for the final top `count` only: the images holding them
are read again (`ImageSource.pixels`), and every activation is projected down to the pixels
under the deconvnet rule (`kvis.core.backward_rules.layer_gradients`, which equals the explicit
deconvnet of `kvis.deconv.deconvnet`), many at a time. Each pair is cropped to a window of the
activation's receptive field (`ReceptiveField.window`), the same size for all; where kvis
cannot follow the field (an UpSampling2D before the layer), to the whole image.
"""

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvis.core.backward_rules import layer_gradient_pass
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.io import write_atomically
from kvis.core.models import expects_bgr, preprocessing_for
from kvis.core.runner import run_batches
from kvis.dataset.scan import LayerStats, Scan
from kvis.dataset.sources import image_source
from kvis.dataset.topk import TopK
from kvis.layers.receptive_fields import ReceptiveField, receptive_fields
from kvis.plot.figures import NotebookFigure, blank_axes, fit_texts, show_image
from kvis.plot.figures import per_row as _fitting

TILE_INCHES = 0.45  # one example's tile in `plot_top_examples`


@dataclass(frozen=True)
class TopExamples:
    """The strongest activations of some channels of one layer, ready to draw.

    Attributes:
        layer: the layer path.
        channels: int (K,) the channels shown.
        values: float32 (K, k) their k strongest activations, descending.
        strongest: "images" (k distinct images) or "positions" (an image can repeat), as
            the scan kept them.
        by_max: whether the channels are in order of their strongest activation (`values[:,
            0]`, descending), as `interesting_channels` gives them; else as they were asked for.
        names: K lists of k image names.
        projections: float32 (K, k, h, w, C) in [0, 1], each activation's deconvnet
            projection cropped to its window, scaled by its own largest magnitude (mid-gray is
            zero); RGB.
        patches: uint8 (K, k, h, w, C) the image pixels in the same windows.
    """

    layer: str
    channels: np.ndarray
    values: np.ndarray
    names: list
    projections: np.ndarray
    patches: np.ndarray
    strongest: str
    by_max: bool


def interesting_channels(found, layer, count=16):
    """The channels of a layer worth showing first: those with the strongest activation (the
    "max" each panel is labelled with), strongest first; equals in channel order.

    Returns:
        int (min(count, C),).
    """
    peak = found.top[layer].values[:, 0]
    return np.argsort(-np.where(np.isfinite(peak), peak, -np.inf), kind="stable")[:count]


def top_examples(model, found, data, *, layer, channels=None, count=16, batch_size=32,
                 labels=None, progress=True):
    """Project the top-k activations of chosen channels and crop their image patches.

    Args:
        model: the Keras model the scan ran on.
        found: its `kvis.dataset.scan.Scan`.
        data: the data it scanned (as for `kvis.dataset.scan.scan`).
        layer: one of `found.layers`.
        channels: the channels to show, in this order (default: `interesting_channels(found,
            layer, count)`, the strongest first).
        count: how many channels by default.
        batch_size: projections per compiled pass.
        labels: as for the scan.
        progress: show progress.

    Returns:
        A `TopExamples`.

    Raises:
        KvisError: a layer the scan did not cover, a channel out of range.
    """
    if layer not in found.top:
        raise KvisError(f"the scan covered {', '.join(found.layers)}, not {layer!r}")
    top = found.top[layer]
    by_max = channels is None
    channels = interesting_channels(found, layer, count) if by_max else np.asarray(channels, int)
    if bad := [int(c) for c in channels if not 0 <= c < len(top.values)]:
        raise KvisError(f"{layer} channel {bad[0]} is out of range (0-{len(top.values) - 1})")
    source = image_source(data, labels=labels)
    kept = np.isfinite(top.values[channels])  # channels with fewer than k activations
    ids = np.unique(top.images[channels][kept])
    pixels = dict(zip(ids.tolist(), source.pixels(model, ids)))
    height, width, colours = model.input_shape[1:]
    field = _field(model, layer, (height, width))
    tile = (min(field.size[0], height), min(field.size[1], width), colours)
    shape = (len(channels), found.count)
    projections = np.full(shape + tile, 0.5, np.float32)
    patches = np.zeros(shape + tile, np.uint8)
    units = [(i, j) for i in range(shape[0]) for j in range(shape[1]) if kept[i, j]]
    signals = _project(model, layer, top, channels, units, pixels, batch_size, progress)
    bgr = expects_bgr(model)
    for (i, j), signal in zip(units, signals):
        box = field.window(*top.positions[channels[i], j], (height, width))
        crop = np.s_[box[0]:box[2] + 1, box[1]:box[3] + 1]
        image = signal[..., ::-1] if bgr else signal
        scale = np.abs(image).max() or 1.0
        projections[i, j] = 0.5 + 0.5 * image[crop] / scale
        patches[i, j] = pixels[int(top.images[channels[i], j])][crop]
    names = [[_name(source, top.images[c, j]) if kept[i, j] else ""
              for j in range(found.count)] for i, c in enumerate(channels)]
    return TopExamples(layer, channels, top.values[channels], names, projections, patches,
                       found.strongest, by_max)


def plot_top_examples(result, *, fig=None, title=None, per_row=None):
    """Zeiler & Fergus Fig. 2: per channel a block of projections beside a block of patches.

    Each channel's block is one mosaic image (`example_mosaic`) in one Axes, so a figure of
    many channels draws quickly.

    Args:
        result: a `TopExamples`.
        fig: a Figure or SubFigure to draw in.
        title: the figure's title.
        per_row: channels per row of blocks (default: as many as fit in
            `kvis.plot.figures.WIDEST`, at most 4).

    Returns:
        A Figure.
    """
    count, k = result.values.shape
    side = int(np.ceil(np.sqrt(k)))
    block = 2 * side * TILE_INCHES
    cols = min(per_row or 4, _fitting(count, block, extra=0.5))
    rows = int(np.ceil(count / cols))
    if fig is None:
        fig = NotebookFigure(figsize=(cols * block + 0.5, rows * side * TILE_INCHES + 0.8),
                             layout="constrained")
    # Separators a 20th of a tile: still a visible line when a tile is drawn in TILE_INCHES.
    gap = max(1, round(result.projections.shape[2] / 20))
    for index, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        blank_axes(ax)
        if index < count:
            mosaic = example_mosaic(result, index, gap=gap)
            show_image(ax, mosaic, vmax=1)
            ax.set_title(f"#{result.channels[index]}  max {result.values[index, 0]:.3g}",
                         fontsize=8)
    fig.suptitle(title or f"{result.layer}: {examples_caption(result)} (projections | patches)",
                 fontsize=10)
    return fit_texts(fig)


def examples_caption(result):
    """What a top-examples figure shows, in words: "each channel's 9 strongest images (each at
    its strongest position), channels in order of their max"."""
    k = result.values.shape[1]
    shown = (f"each channel's {k} strongest images (each at its strongest position)"
             if result.strongest == "images"
             else f"each channel's {k} strongest positions (an image can repeat)")
    return shown + (", channels in order of their max" if result.by_max else "")


def example_mosaic(result, index, *, gap=1):
    """One channel's block as an image: its projections in a square grid, then its patches.

    Returns:
        float32 (rows, cols, C) in [0, 1]: tiles `gap` px apart on white, the patches' grid
        `3 * gap` px right of the projections'; a missing activation leaves its tile white.
    """
    k, height, width, colours = result.projections.shape[1:]
    side = int(np.ceil(np.sqrt(k)))
    step_y, step_x = height + gap, width + gap
    block = side * step_x - gap
    mosaic = np.ones((side * step_y - gap, 2 * block + 3 * gap, colours), np.float32)
    for j in range(k):
        if not result.names[index][j]:
            continue
        top, left = (j // side) * step_y, (j % side) * step_x
        mosaic[top:top + height, left:left + width] = result.projections[index, j]
        left += block + 3 * gap
        mosaic[top:top + height, left:left + width] = result.patches[index, j] / 255.0
    return mosaic


def write_index(found, path, *, names=None, data=None):
    """Write what a scan found as JSON (atomically), to reuse it without scanning again.

    Args:
        found: a `kvis.dataset.scan.Scan`.
        path: the JSON file.
        names: the image names by id (`ImageSource.names`), recorded beside each id.
        data: the data scanned, recorded when it is a folder or file (as an absolute path) or
            "demo", so that `scanned_data` finds its images again.
    """
    layers = {}
    for layer in found.layers:
        top = found.top[layer]
        layers[layer] = {
            "values": np.where(np.isfinite(top.values), top.values, None).tolist(),
            "images": top.images.tolist(), "positions": top.positions.tolist(),
            "names": None if names is None else [[names[i] if i >= 0 else None for i in row]
                                                 for row in top.images.tolist()]}
        if found.stats:
            stats = found.stats[layer]
            layers[layer].update({
                "positions_seen": stats.positions, "total": stats.total.tolist(),
                "peak": np.where(np.isfinite(stats.peak), stats.peak, None).tolist(),
                "active": stats.active.tolist(), "mean": stats.mean.tolist(),
                "fraction_active": stats.fraction_active.tolist(),
                "dead": stats.dead.tolist(), "rare": stats.rare.tolist()})
    if isinstance(data, (str, Path)) and data != "demo":
        data = str(Path(data).resolve())
    index = {"model": found.model, "count": found.count, "strongest": found.strongest,
             "source": found.source,
             "data": data if isinstance(data, str) else None,
             "images": found.images, "batches": found.batches,
             "skipped": [list(entry) for entry in found.skipped], "layers": layers}
    text = json.dumps(index, indent=1)
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def read_index(path):
    """The `Scan` a JSON index holds (see `write_index`).

    Raises:
        KvisError: a missing or malformed file.
    """
    try:
        with open(path) as file:
            index = json.load(file)
        layers = tuple(index["layers"])
        count = index["count"] if "count" in index else index["k"]  # older indexes: "k"
        gathered = all("total" in index["layers"][p] for p in layers)
        return Scan(index["model"], layers, count,
                    {p: TopK(_floats(index["layers"][p]["values"], -np.inf),
                             np.int64(index["layers"][p]["images"]),
                             np.int32(index["layers"][p]["positions"])) for p in layers},
                    {p: LayerStats(index["layers"][p]["positions_seen"],
                                   np.float64(index["layers"][p]["total"]),
                                   _floats(index["layers"][p]["peak"], -np.inf),
                                   np.int64(index["layers"][p]["active"])) for p in layers}
                    if gathered else {},
                    index["source"], index["images"], [tuple(e) for e in index["skipped"]],
                    index["batches"], index.get("strongest", "positions"))  # older: positions
    except FileNotFoundError:
        raise KvisError(f"scan index not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise KvisError(f"{path} is not a kvis scan index: {error}") from None


def scanned_data(path):
    """The data a scan index records (a path or "demo"), or None where it names none."""
    try:
        with open(path) as file:
            return json.load(file).get("data")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _floats(values, missing):
    return np.array([[missing if v is None else v for v in row] if isinstance(row, list)
                     else (missing if row is None else row) for row in values], np.float32)


def _project(model, layer, top, channels, units, pixels, batch_size, progress):
    """Deconvnet projections (model-input space) of the given (channel row, rank) units."""
    if not units:
        return np.zeros((0,))
    preprocess = preprocessing_for(model)
    output_shape = tuple(model_graph(model).nodes[layer].output.shape[1:])

    def signals(rows):
        chunk = units[rows]
        x = preprocess(np.stack([pixels[int(top.images[channels[i], j])] for i, j in chunk]))
        weights = np.zeros((len(chunk), *output_shape), np.float32)
        for n, (i, j) in enumerate(chunk):
            row, col = top.positions[channels[i], j]
            weights[n, row, col, channels[i]] = top.values[channels[i], j]
        return x, weights

    return run_batches(layer_gradient_pass(model, layer, "deconvnet"), signals,
                       count=len(units), batch_size=batch_size, desc="projecting",
                       progress=progress)[0]


def _field(model, layer, image_size):
    """The layer's receptive field; where kvis cannot follow it, the whole image (warned)."""
    field = receptive_fields(model)[layer]
    if field is None:
        warnings.warn(f"the receptive field of {layer!r} is unknown (a layer before it changes "
                      "the spatial size in a way kvis does not follow): the examples show "
                      "whole images", stacklevel=3)
        field = ReceptiveField(image_size, (1, 1), ((image_size[0] - 1) / 2,
                                                    (image_size[1] - 1) / 2))
    return field


def _name(source, image_id):
    return source.names[image_id] if source.names is not None else f"image {image_id}"
