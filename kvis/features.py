"""Feature maps: the activations an image produces at each layer, ranked and summarised."""

import numpy as np

from kvis.anatomy import spatial_layers
from kvis.errors import KvisError
from kvis.graph import model_graph, probe
from kvis.images import check_input
from kvis.plot import image_grid

RANKINGS = ("mean", "max")


def feature_maps(model, x, layers=None, *, batch_size=32):
    """Activations of images at one, several or all spatial layers, in one forward pass.

    Args:
        model: a Keras model.
        x: float32 (N, H, W, C), preprocessed for the model (e.g. `load_image(...).x`).
        layers: a layer path, a list of paths, or None for every layer with spatial output.
        batch_size: images per forward pass.

    Returns:
        `{path: float32 (N, h, w, c)}` in the order asked.

    Raises:
        KvisError: an unknown layer, a layer without spatial output, or images that do not
            fit the model's input.

    Example:
        >>> image = kvis.load_image("cat.jpg", model)
        >>> maps = kvis.feature_maps(model, image.x, "block3_conv1")["block3_conv1"][0]
    """
    paths = spatial_layers(model) if layers is None else (
        [layers] if isinstance(layers, str) else list(layers))
    if not paths:
        raise KvisError(f"model {model.name!r} has no layers with spatial feature maps")
    nodes = [model_graph(model).node(path) for path in paths]
    for node in nodes:
        if len(getattr(node.output, "shape", ())) != 4:
            raise KvisError(f"layer {node.path!r} ({type(node.layer).__name__}) has output shape "
                            f"{tuple(node.output.shape)}: no spatial feature maps")
    x = check_input(model, x)
    outputs = probe(model, [node.path for node in nodes]).predict(x, batch_size=batch_size,
                                                                 verbose=0)
    return {node.path: np.asarray(outputs[node.path]) for node in nodes}


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


def plot_feature_maps(maps, *, top=16, channels=None, rank_by="mean", title=None):
    """The strongest maps of a layer (or chosen channels), labelled with index and score.

    Args:
        maps: (h, w, c) activations of one image.
        top: how many of the strongest channels to show (ignored when `channels` is given).
        channels: channel indices to show, in this order.
        rank_by: "mean" or "max", the score used for ranking and shown in the labels.
        title: figure title.

    Returns:
        A Figure; all tiles share one colour scale, so weak maps look weak.
    """
    maps = _one_image(maps)
    order, scores = rank_channels(maps, rank_by)
    score_of = dict(zip(order.tolist(), scores.tolist()))
    if channels is None:
        shown = order[:top].tolist()
    else:
        shown = [int(c) for c in channels]
        if bad := [c for c in shown if not 0 <= c < maps.shape[-1]]:
            raise KvisError(f"channels {bad} out of range: the layer has {maps.shape[-1]}")
    tiles = [maps[..., c] for c in shown]
    labels = [f"#{c} {rank_by} {score_of[c]:.3g}" for c in shown]
    low = min(0.0, float(np.min(tiles)))
    return image_grid(tiles, titles=labels, vmin=low, vmax=float(np.max(tiles)) or 1.0,
                      title=title, colorbar=True)


def plot_layer_summary(maps, *, title=None):
    """The whole layer at a glance: mean and max over channels, and every channel's score.

    Args:
        maps: (h, w, c) activations of one image.
        title: figure title.

    Returns:
        A Figure with three panels: the mean map, the max map, and the sorted channel means
        with the strongest channels named and the count of silent (all-zero) channels.
    """
    maps = _one_image(maps)
    fig = image_grid([maps.mean(axis=-1), maps.max(axis=-1)],
                     titles=["mean over channels", "max over channels"], cols=3,
                     tile_inches=2.4, title=title)
    ax = fig.axes[2]
    ax.set_axis_on()
    order, scores = rank_channels(maps, "mean")
    ax.plot(scores)
    silent = int(np.sum(maps.max(axis=(0, 1)) <= 0))
    ax.set_title(f"channel means, sorted ({silent}/{maps.shape[-1]} silent)", fontsize=8)
    ax.set_xlabel("rank", fontsize=8)
    for rank in range(min(5, len(order))):
        ax.annotate(f"#{order[rank]}", (rank, scores[rank]), fontsize=7,
                    xytext=(4, -4 - 7 * rank), textcoords="offset points")
    ax.tick_params(labelsize=7)
    return fig


def plot_feature_overview(maps_by_layer, *, top=6):
    """One row per layer: the mean over channels, then the `top` strongest maps.

    Args:
        maps_by_layer: `{path: (h, w, c)}` for one image, e.g. from `feature_maps` at
            `stage_layers(model)`.
        top: maps per row after the mean.

    Returns:
        A Figure; each map is scaled on its own, the label gives its channel and mean.
    """
    tiles, labels = [], []
    for path, maps in maps_by_layer.items():
        maps = _one_image(maps)
        order, scores = rank_channels(maps)
        row = [maps.mean(axis=-1)] + [maps[..., c] for c in order[:top]]
        tiles += row + [np.zeros((1, 1))] * (top + 1 - len(row))
        labels += [f"{path} {maps.shape[0]}x{maps.shape[1]}x{maps.shape[2]}\nmean"]
        labels += [f"#{c} {s:.3g}" for c, s in zip(order[:top], scores[:top])]
        labels += [""] * (top + 1 - len(row))
    return image_grid([_unit(t) for t in tiles], titles=labels, cols=top + 1, tile_inches=1.5)


def _unit(tile):
    low, high = float(tile.min()), float(tile.max())
    return (tile - low) / (high - low) if high > low else np.zeros_like(tile)


def _one_image(maps):
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3:
        raise KvisError(f"expected the maps of one image, (h, w, c); got shape {maps.shape}")
    return maps
