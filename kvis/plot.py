"""Figure helpers shared by every family of views. They draw and return Figures, never show."""

import io
import math

from matplotlib.figure import Figure


class NotebookFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter even when pyplot is never imported."""

    def _repr_png_(self):
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def image_grid(tiles, *, titles=None, cols=None, cmap="viridis", vmin=None, vmax=None,
               title=None, tile_inches=1.3, colorbar=False, fig=None):
    """A grid of images with optional per-tile titles.

    Args:
        tiles: a sequence of (h, w) arrays (drawn with `cmap`) or (h, w, 3) RGB arrays in [0, 1].
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
        _blank(ax)
        if i >= count:
            continue
        image = ax.imshow(tiles[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if colorbar and image is not None:
        fig.colorbar(image, ax=axes.tolist(), shrink=0.6)
    if title:
        fig.suptitle(title)
    return fig


def _blank(ax):
    """Axes with no frame and no ticks (empty tick lists also spare the layout their
    computation: a third of a grid's drawing time)."""
    ax.set_axis_off()
    ax.set_xticks([])
    ax.set_yticks([])
