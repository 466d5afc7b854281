"""What every section of a report is made of: `Part`s (a captioned figure or table)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One item of a section: a figure (PNG bytes) or a table, with its caption.

    Attributes:
        caption: one line: what it shows and the parameters used.
        png: the figure as PNG bytes, or None for a table.
        table: `(header, rows)` of strings, or None for a figure.
    """

    caption: str
    png: bytes | None = None
    table: tuple | None = None


def shape_text(shape):
    """A shape as text, the batch dimension as N: '(None, 28, 28, 1)' -> 'N×28×28×1'."""
    return "×".join("N" if d is None else str(d) for d in shape)
