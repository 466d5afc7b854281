"""Figure helpers shared by every family of views. They draw and return Figures, never show."""

import io
import math

import numpy as np
from matplotlib.figure import Figure


class NotebookFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter even when pyplot is never imported."""

    def _repr_png_(self):
        return png_bytes(self)


def png_bytes(figure, *, dpi=100):
    """A figure as PNG bytes, cropped to what is drawn (nothing drawn is cut off)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def displayable(image):
    """An image as `imshow` takes it: (H, W) for one channel, (H, W, 3) as it is."""
    image = np.asarray(image)
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def show_image(ax, image, *, vmax=255):
    """Draw an image on `ax`: RGB as it is, one channel in gray, values in [0, vmax]."""
    ax.imshow(displayable(image), cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")


def image_grid(tiles, *, titles=None, cols=None, cmap="viridis", vmin=None, vmax=None,
               title=None, tile_inches=1.3, colorbar=False, fig=None):
    """A grid of images with optional per-tile titles.

    Args:
        tiles: a sequence of (h, w) or (h, w, 1) arrays (drawn with `cmap`) or (h, w, 3) RGB
            arrays in [0, 1].
        titles: one short string per tile.
        cols: tiles per row (default: about square).
        cmap, vmin, vmax: colour mapping for 2-D tiles; a shared range keeps tiles comparable.
        title: the figure's title.
        colorbar: add one colour bar for the shared range.
        fig: a Figure or SubFigure to draw in; by default a new Figure sized to the grid.

    Returns:
        The Figure (or SubFigure) drawn in.
    """
    count = len(tiles)
    cols = cols or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / cols))
    if fig is None:
        fig = NotebookFigure(figsize=(cols * tile_inches + (0.8 if colorbar else 0.2),
                              rows * tile_inches + (0.6 if title else 0.2)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for i, ax in enumerate(axes):
        blank_axes(ax)
        if i >= count:
            continue
        image = ax.imshow(displayable(tiles[i]), cmap=cmap, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if colorbar and image is not None:
        fig.colorbar(image, ax=axes.tolist(), shrink=0.6)
    if title:
        fig.suptitle(title)
    return fig


def map_mosaic(tiles, *, titles, cols=None, cmap="viridis", vmin=None, vmax=None, title=None,
               tile_inches=1.3, fig=None):
    """Equal-sized 2-D maps on one colour scale, drawn as one image in one Axes with a title
    above each map and one colour bar: a grid of many maps draws in under half the time of an
    Axes per map (`image_grid`).

    Args:
        tiles: a sequence of (h, w) arrays of one shape.
        titles: one short string per tile.
        cols, cmap, vmin, vmax, title, tile_inches, fig: as for `image_grid`.

    Returns:
        The Figure (or SubFigure) drawn in; its first Axes holds the mosaic, where tile i
        sits at `mosaic_corners(tiles[0].shape, len(tiles), cols)[i]` and gaps are NaN.
    """
    count = len(tiles)
    cols = cols or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / cols))
    height, width = tiles[0].shape
    corners = mosaic_corners((height, width), count, cols)
    gap_y, gap_x = _gaps(height, width)
    mosaic = np.full((rows * (height + gap_y), cols * (width + gap_x) - gap_x), np.nan,
                     np.float32)
    if fig is None:
        fig = NotebookFigure(figsize=(cols * tile_inches + 0.8,
                                      rows * tile_inches * 1.15 + (0.6 if title else 0.2)),
                             layout="constrained")
    ax = fig.subplots()
    blank_axes(ax)
    for (top, left), tile, label in zip(corners, tiles, titles):
        mosaic[top:top + height, left:left + width] = tile
        ax.text(left + width / 2 - 0.5, top - 0.5, label, ha="center", va="bottom", fontsize=8)
    image = ax.imshow(mosaic, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.6)
    if title:
        fig.suptitle(title)
    return fig


def mosaic_corners(shape, count, cols):
    """`(top, left)` of each of `count` tiles of `shape` in a `map_mosaic` of `cols` columns."""
    gap_y, gap_x = _gaps(*shape)
    return [((i // cols) * (shape[0] + gap_y) + gap_y, (i % cols) * (shape[1] + gap_x))
            for i in range(count)]


def _gaps(height, width):
    """Room above each tile for its title (a fifth of its height) and between columns."""
    return max(1, math.ceil(0.2 * height)), max(1, math.ceil(0.06 * width))


def blank_axes(ax):
    """Axes with no frame and no ticks (empty tick lists also spare the layout their
    computation: a third of a grid's drawing time)."""
    ax.set_axis_off()
    ax.set_xticks([])
    ax.set_yticks([])
