"""Figure helpers shared by every family of views. They draw and return Figures, never show."""

import io
import math
import re

import numpy as np
from matplotlib.figure import Figure
from matplotlib.textpath import text_to_path

# The widest figure, in inches: the report's column at the report's dpi (kvis.report.page
# derives both from its page layout; tests/test_report.py holds them together). Figures wrap
# their panels into rows to stay within it, so a page never shrinks them.
WIDEST = 9.0
# The smallest font of any figure, in points: at the report's dpi it is the caption's size.
SMALLEST_FONT = 8


class NotebookFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter even when pyplot is never imported."""

    def _repr_png_(self):
        return png_bytes(self)


def png_bytes(figure, *, dpi=100):
    """A figure as PNG bytes, cropped to what is drawn with a margin of `PNG_MARGIN` inches
    (nothing drawn is cut off)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=PNG_MARGIN)
    return buffer.getvalue()


PNG_MARGIN = 0.05


def per_row(count, panel_inches, *, extra=0.0):
    """How many of `count` panels `panel_inches` wide fit in a row of a figure no wider than
    `WIDEST` (less `extra` inches for colour bars and labels); at least one."""
    return max(1, min(count, int((WIDEST - extra) // panel_inches)))


def fit_texts(fig):
    """Wrap the titles, axis labels and legend entries of `fig` (a Figure or SubFigure, and
    every subfigure and Axes in it) into lines that fit their room, so that none reaches past
    the figure's edges nor far into a neighbouring panel: the figure's width for its title,
    an Axes' cell of its grid for the Axes' texts and, where a text is long for its cell,
    the room its centre leaves to the edges once the figure is laid out. Lines break after
    spaces, '/', '_' and ',' (inside a word only when nothing else fits).

    Returns:
        `fig`.
    """
    _fit_all(_placed_texts(fig), fig)
    return fig


def fit_axes(ax):
    """`fit_texts` for one Axes' texts only (a plot that draws on an Axes it is given).

    Returns:
        The Figure (or SubFigure) of `ax`.
    """
    _fit_all(_axes_texts(ax), ax.figure)
    return ax.figure


def _fit_all(placed, fig):
    """Wrap each `(text, box, inches)` to its cell, then, where one is long for it, to the
    room its centre leaves in its box once `fig` is laid out."""
    for text, _, inches in placed:
        _fit(text, inches)
    if any(_points(line, text.get_fontproperties()) > 0.5 * 72 * inches
           for text, _, inches in placed for line in text.get_text().split("\n")):
        fig.get_figure(root=True).draw_without_rendering()  # lays it out
        for text, box, inches in placed:
            _fit(text, min(inches, _room(text, box)))


def _placed_texts(fig):
    """`(text, its figure's box, inches of its cell)` of every title, label and legend entry
    of `fig` and the subfigures and Axes in it."""
    placed = [] if not fig._suptitle else [(fig._suptitle, fig.bbox, _inches(fig)[0] - 0.2)]
    for ax in fig.axes:
        placed += _axes_texts(ax)
    for sub in fig.subfigs:
        placed += _placed_texts(sub)
    return placed


def _axes_texts(ax):
    spec = ax.get_subplotspec()
    if spec is None:
        return []
    width, height = _cell(spec, *_inches(ax.figure))
    box = ax.figure.bbox
    placed = [(text, box, width) for text in (ax.title, ax._left_title, ax._right_title,
                                              ax.xaxis.label) if text.get_text()]
    if ax.yaxis.label.get_text():
        placed.append((ax.yaxis.label, box, height))
    if ax.get_legend() is not None:
        placed += [(text, box, width - 0.4) for text in ax.get_legend().get_texts()]
    return placed


def _room(text, box):
    """Inches a text, kept on its centre, may span without leaving `box` (display units)."""
    extent = text.get_window_extent()
    dpi = text.get_figure(root=True).dpi
    if text.get_rotation() % 180 == 90:
        centre, low, high = (extent.y0 + extent.y1) / 2, box.y0, box.y1
    else:
        centre, low, high = (extent.x0 + extent.x1) / 2, box.x0, box.x1
    if text.get_horizontalalignment() == "left" and text.get_rotation() % 180 != 90:
        return (high - extent.x0) / dpi
    return 2 * max(0.0, min(centre - low, high - centre)) / dpi


def wrap_text(text, width, font):
    """`text` broken into lines no wider than `width` points in `font` (FontProperties)."""
    return "\n".join(wrapped for line in text.split("\n")
                     for wrapped in _wrap_line(line, width, font))


def _wrap_line(line, width, font):
    lines, current = [], ""
    # Break after a space, "/", "_" or a comma, never inside a number such as 10,000.
    for piece in re.findall(r"(?:[^ /_,]|,(?=\d))*(?:[ /_]|,(?!\d))*", line):
        if current and _points(current + piece.rstrip(), font) > width:
            lines.append(current.rstrip())
            current = ""
        while not current and len(piece) > 1 and _points(piece.rstrip(), font) > width:
            cut = max([1] + [i for i in range(1, len(piece))
                             if _points(piece[:i], font) <= width])
            lines.append(piece[:cut])
            piece = piece[cut:]
        current += piece
    return lines + [current.rstrip()] if current or not lines else lines


def _points(text, font):
    return text_to_path.get_text_width_height_descent(text, font, ismath=False)[0]


def _fit(text, inches):
    if text is not None and text.get_text() and inches > 0:
        text.set_text(wrap_text(text.get_text(), 72 * inches * 0.9, text.get_fontproperties()))


def _inches(fig):
    dpi = fig.get_figure(root=True).dpi
    return fig.bbox.width / dpi, fig.bbox.height / dpi


def _cell(spec, width, height):
    """The (width, height) in inches of the cells of a SubplotSpec in a figure of `width` x
    `height` inches."""
    grid = spec.get_gridspec()
    widths, heights = grid.get_width_ratios(), grid.get_height_ratios()
    widths = widths if widths is not None else [1] * grid.ncols
    heights = heights if heights is not None else [1] * grid.nrows
    return (width * sum(widths[spec.colspan.start:spec.colspan.stop]) / sum(widths),
            height * sum(heights[spec.rowspan.start:spec.rowspan.stop]) / sum(heights))


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
        cols: tiles per row (default: about square, as many as fit in `WIDEST`); tiles
            shrink so that `cols` of them fit.
        cmap, vmin, vmax: colour mapping for 2-D tiles; a shared range keeps tiles comparable.
        title: the figure's title.
        colorbar: add one colour bar for the shared range.
        fig: a Figure or SubFigure to draw in; by default a new Figure sized to the grid.

    Returns:
        The Figure (or SubFigure) drawn in.
    """
    count = len(tiles)
    extra = 0.8 if colorbar else 0.2
    cols, tile_inches = _columns(count, cols, tile_inches, extra)
    rows = max(1, math.ceil(count / cols))
    if fig is None:
        fig = NotebookFigure(figsize=(cols * tile_inches + extra,
                                      rows * tile_inches + (0.6 if title else 0.2)),
                             layout="constrained")
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
    return fit_texts(fig)


def _columns(count, cols, tile_inches, extra):
    """Tiles per row and their size: `cols` (default about square, at most as many as fit)
    of at most `tile_inches` each, in a figure no wider than `WIDEST`."""
    cols = cols or min(max(1, math.ceil(math.sqrt(count))),
                       per_row(count, tile_inches, extra=extra))
    return cols, min(tile_inches, (WIDEST - extra) / cols)


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
    cols, tile_inches = _columns(count, cols, tile_inches, 0.8)
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
    return fit_texts(fig)


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
