"""What every section of a report is made of: `Part`s (a captioned figure or table)."""

from dataclasses import dataclass
from pathlib import Path

from kvis.microscope import layout


@dataclass(frozen=True)
class Part:
    """One item of a section: a figure (PNG bytes) or a table, with its caption.

    Attributes:
        caption: one line: what it shows and the parameters used.
        png: the figure as PNG bytes, or None for a table.
        table: `(header, rows)` of strings, or None for a figure.
        links: `(label, Path)` of the microscope pages of the units it shows ("conv2:3",
            site/layers/conv2/3.html), from `unit_links`; the page links them relative to
            its own folder.
    """

    caption: str
    png: bytes | None = None
    table: tuple | None = None
    links: tuple = ()


def unit_links(site, layer, channels):
    """The microscope pages of some units of a layer, those the site has.

    Args:
        site: a microscope site's folder (`kvis.microscope.manifest.site_of`), or None.
        layer: the layer's path.
        channels: the units' indices, in the order shown.

    Returns:
        `(("layer:unit", Path of its page), ...)`, in the order of `channels`; () without a
        site.
    """
    if site is None:
        return ()
    pages = ((f"{layer}:{int(c)}", Path(site) / layout.unit_page(layer, c)) for c in channels)
    return tuple((label, page) for label, page in pages if page.is_file())


def shape_text(shape):
    """A shape as text, the batch dimension as N: '(None, 28, 28, 1)' -> 'N×28×28×1'."""
    return "×".join("N" if d is None else str(d) for d in shape)
