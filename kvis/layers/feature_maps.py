"""Feature maps: the activations images produce at each layer, ranked and summarised."""

import textwrap
import types
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kvis.core.anatomy import spatial_layers, spatial_node, stage_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images, unit_range
from kvis.core.runner import run_batches
from kvis.core.targets import score_pass
from kvis.core.vocabulary import RANKINGS
from kvis.plot.figures import displayable, fit_texts, image_grid, map_mosaic


@dataclass(frozen=True, eq=False, repr=False)
class FeatureMaps(Mapping):
    """Feature maps of a batch of images, read as a mapping `layer path -> maps`.

    `result["block3_conv1"]` is float32 (N, h, w, c), the layer's output for the N images
    (a unique suffix of a nested path works too: `result["conv5_block3_out"]`).

    Attributes:
        maps: `{path: float32 (N, h, w, c)}` in the order asked (read-only mapping).
        pixels: uint8 (N, H, W, C) in [0, 255], the images as the model saw them.
        names: a name per image.
        stages: the layers `plot_feature_overview` shows: the network's stages (the last
            layer at each resolution, padding skipped) when every spatial layer was
            computed, else the layers asked for.
        model: the model's name.
    """

    maps: Mapping
    pixels: np.ndarray
    names: list
    stages: tuple
    model: str

    def __getitem__(self, path):
        if path in self.maps:
            return self.maps[path]
        matches = [p for p in self.maps if p.endswith("/" + str(path))]
        if len(matches) == 1:
            return self.maps[matches[0]]
        raise KeyError(path)

    def __iter__(self):
        return iter(self.maps)

    def __len__(self):
        return len(self.maps)

    def __repr__(self):
        shapes = ", ".join(f"{path}: {self.maps[path].shape}" for path in list(self.maps)[:4])
        more = f", ... ({len(self.maps)} layers)" if len(self.maps) > 4 else ""
        return f"FeatureMaps(model={self.model!r}, images={self.names}, {{{shapes}{more}}})"

    def layer(self, layer=None):
        """The full path of `layer` in this result; None: the result's only layer.

        Raises:
            KvisError: the layer is not in the result (its layers are listed), or None was
                given for a result of several layers.
        """
        if layer is None:
            if len(self.maps) == 1:
                return next(iter(self.maps))
            raise KvisError(f"the feature maps hold {len(self.maps)} layers; pick one with "
                            f"layer=: {_listed(self.maps)}")
        if layer in self.maps:
            return layer
        matches = [p for p in self.maps if p.endswith("/" + layer)]
        if len(matches) == 1:
            return matches[0]
        raise KvisError(f"layer {layer!r} is not in these feature maps; they hold "
                        f"{_listed(self.maps)}")


def feature_maps(model, images, layers=None, *, batch_size=32, progress=True):
    """Activations of images at one, several or all spatial layers, in one forward pass.

    The pass is compiled once per model and set of layers (`kvis.core.runner`), so repeated calls
    cost only the forward pass.

    Args:
        model: a Keras model.
        images: what `kvis.load_image` returns (one or a list), or preprocessed float32
            model input (N, H, W, C).
        layers: a layer path, a list of paths, or None for every layer with spatial output.
        batch_size: images per forward pass.
        progress: show progress.

    Returns:
        A `FeatureMaps`: `result[path]` is float32 (N, h, w, c), the layer's output.

    Raises:
        KvisError: an unknown layer (the closest are named), a layer without spatial output,
            or images that do not fit the model's input.

    Example:
        >>> image = kvis.load_image("cat.jpg", model)
        >>> maps = kvis.feature_maps(model, image, "block3_conv1")
        >>> maps["block3_conv1"].shape
        (1, 56, 56, 256)
        >>> kvis.plot_feature_maps(maps)
    """
    graph = model_graph(model)
    if layers is None:
        paths = spatial_layers(model)
        if not paths:
            raise KvisError(f"model {model.name!r} has no layers with spatial feature maps")
    else:
        asked = [layers] if isinstance(layers, str) else list(layers)
        paths = list(dict.fromkeys(spatial_node(graph, layer, "feature maps").path
                                   for layer in asked))
    batch = as_images(model, images)
    maps = run_batches(score_pass(model, None, layers=paths), (batch.x,),
                       batch_size=batch_size, desc="feature maps", progress=progress)
    stages = [p for p in stage_layers(model) if p in maps] if layers is None else paths
    return FeatureMaps(types.MappingProxyType({path: maps[path] for path in paths}),
                       batch.pixels, batch.names, tuple(stages), model.name)


def rank_channels(maps, by="mean"):
    """Channels of one image's maps, strongest first.

    Args:
        maps: (h, w, c) activations of one image.
        by: "mean" (average activation) or "max" (peak activation).

    Returns:
        `(channels, scores)`: int (c,) channel indices and float (c,) their scores, descending.
    """
    maps = _one_image(maps)
    if by not in RANKINGS:
        raise KvisError(f"unknown ranking {by!r}; choose from {', '.join(RANKINGS)}")
    scores = maps.mean(axis=(0, 1)) if by == "mean" else maps.max(axis=(0, 1))
    channels = np.argsort(-scores, kind="stable")
    return channels, scores[channels]


def plot_feature_maps(result, *, layer=None, image=0, count=16, channels=None, rank_by="mean",
                      fig=None, title=None):
    """The strongest maps of a layer (or chosen channels), labelled with index and score.

    Args:
        result: a `FeatureMaps`.
        layer: the layer to show; None for the result's only layer.
        image: which image of the result.
        count: how many of the strongest channels to show (ignored when `channels` is given).
        channels: channel indices to show, in this order.
        rank_by: "mean" or "max", the score used for ranking and shown in the labels.
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: figure title (default: the image name and the layer).

    Returns:
        A Figure (`kvis.plot.figures.map_mosaic`: one image of all the maps); all maps share one
        colour scale, so weak maps look weak.

    Example:
        >>> kvis.plot_feature_maps(kvis.feature_maps(model, image), layer="block2_conv1", count=8)
    """
    path, maps = _layer_maps(result, layer, image)
    order, scores = rank_channels(maps, rank_by)
    score_of = dict(zip(order.tolist(), scores.tolist()))
    if channels is None:
        shown = order[:count].tolist()
    else:
        shown = [int(c) for c in channels]
        if bad := [c for c in shown if not 0 <= c < maps.shape[-1]]:
            raise KvisError(f"channels {bad} out of range: {path} has {maps.shape[-1]}")
    tiles = [maps[..., c] for c in shown]
    labels = [f"#{c} {rank_by} {score_of[c]:.3g}" for c in shown]
    low = min(0.0, float(np.min(tiles)))
    return map_mosaic(tiles, titles=labels, vmin=low, vmax=float(np.max(tiles)) or 1.0,
                      title=title or f"{result.names[image]} at {path}", fig=fig)


def plot_layer_summary(result, *, layer=None, image=0, fig=None, title=None):
    """The whole layer at a glance: mean and max over channels, and every channel's score.

    Args:
        result: a `FeatureMaps`.
        layer: the layer to summarise; None for the result's only layer.
        image: which image of the result.
        fig: a Figure or SubFigure to draw in.
        title: figure title (default: the image name and the layer).

    Returns:
        A Figure with three panels: the mean map, the max map, and the sorted channel means
        with the strongest channels named and the count of silent (all-zero) channels.
    """
    path, maps = _layer_maps(result, layer, image)
    fig = image_grid([maps.mean(axis=-1), maps.max(axis=-1)],
                     titles=["mean over channels", "max over channels"], cols=3,
                     tile_inches=2.4, title=title or f"{result.names[image]} at {path}", fig=fig)
    ax = fig.axes[2]
    ax.set_axis_on()
    order, scores = rank_channels(maps, "mean")
    ax.plot(scores)
    silent = int(np.sum(maps.max(axis=(0, 1)) <= 0))
    ax.set_title(f"channel means, sorted ({silent}/{maps.shape[-1]} silent)", fontsize=8)
    ax.set_xlabel("rank", fontsize=8)
    for rank in range(min(5, len(order))):
        ax.annotate(f"#{order[rank]}", (rank, scores[rank]), fontsize=8,
                    xytext=(4, -4 - 8 * rank), textcoords="offset points")
    ax.tick_params(labelsize=8)
    return fit_texts(fig)


def plot_feature_overview(result, *, image=0, count=6, fig=None, title=None):
    """One row per stage: the stage's mean over channels laid over the input image, then its
    `count` strongest maps.

    Args:
        result: a `FeatureMaps`; its `stages` are shown (every stage of the network when
            all spatial layers were computed, padding layers skipped).
        image: which image of the result.
        count: maps per row after the mean.
        fig: a Figure or SubFigure to draw in.
        title: figure title (default: the image's name).

    Returns:
        A Figure; each map is scaled on its own, and the labels give the layer (long paths
        wrapped), its shape, and each map's channel and mean.
    """
    pixels = displayable(result.pixels[image].astype(np.float32) / 255.0)
    tiles, labels = [], []
    for path in result.stages:
        maps = result.maps[path][image]
        order, scores = rank_channels(maps)
        row = [maps.mean(axis=-1)] + [maps[..., c] for c in order[:count]]
        tiles += [unit_range(t) for t in row] + [np.full((1, 1), np.nan)] * (count + 1 - len(row))
        labels += [_wrapped(path) + f"\n{'x'.join(str(d) for d in maps.shape)} mean"]
        labels += [f"#{c} {s:.3g}" for c, s in zip(order[:count], scores[:count])]
        labels += [""] * (count + 1 - len(row))
    fig = image_grid(tiles, titles=labels, cols=count + 1, tile_inches=1.5,
                     title=title or f"{result.names[image]}: feature maps by stage", fig=fig)
    for ax in fig.axes[::count + 1]:  # the input under each stage's mean
        mean = ax.images[0]
        height, width = mean.get_array().shape
        mean.set_alpha(0.6)
        ax.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0, zorder=-1,
                  extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="nearest")
    return fig


def _layer_maps(result, layer, image):
    path = result.layer(layer)
    if not 0 <= image < len(result.names):
        raise KvisError(f"image {image} is out of range: the result holds {len(result.names)}")
    return path, result.maps[path][image]


def _wrapped(text, width=18):
    """A label broken at '/' and '_' so that no line is wider than a tile."""
    pieces = text.replace("/", "/\0").replace("_", "_\0").split("\0")
    lines, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(part for line in lines for part in textwrap.wrap(line, width) or [""])


def _listed(paths, count=8):
    paths = list(paths)
    return ", ".join(paths[:count]) + (" ..." if len(paths) > count else "")


def _one_image(maps):
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3:
        raise KvisError(f"expected the maps of one image, (h, w, c); got shape {maps.shape}")
    return maps
