"""A kvis report as one self-contained HTML page: figures inline as PNG, styles inline, no
script and nothing fetched, so it opens offline and can be mailed as one file. Its only links
out are to the pages of a microscope site (`build_report(..., microscope=...)`), relative to the
page's folder."""

import base64
import datetime
import html
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

from kvis.core.io import write_atomically
from kvis.core.vocabulary import RANDOM_WEIGHTS
from kvis.plot.figures import SMALLEST_FONT

# The page's column and its caption's size, in CSS pixels: a figure shown at most this wide
# is never shrunk, and at FIGURE_DPI its smallest font is the caption's size. Figures are
# at most kvis.plot.figures.WIDEST inches wide: tests/test_report.py checks that they fit.
MAIN_PX = 1100
FIGURE_FRAME_PX = 13  # a figure's border and padding, each side
COLUMN_PX = MAIN_PX - 2 * FIGURE_FRAME_PX
CAPTION_PX = 13
FIGURE_DPI = math.ceil(CAPTION_PX * 72 / SMALLEST_FONT)

_STYLE = f"""
body {{ font: 15px/1.5 system-ui, sans-serif; color: #1d1d1f; margin: 0; background: #fafafa; }}
header, main {{ max-width: {MAIN_PX}px; margin: 0 auto; padding: 0 24px; }}
header {{ padding-top: 24px; }}
h1 {{ font-size: 26px; margin: 0 0 4px; }}
h2 {{ font-size: 20px; margin: 40px 0 8px; padding-top: 8px; border-top: 1px solid #ddd; }}
.meta, figcaption, .notes, .timing {{ color: #555; font-size: {CAPTION_PX}px;
                                    font-weight: normal; }}
.warning {{ background: #fff4e5; border-left: 4px solid #e8a33d; padding: 6px 12px; }}
nav ol {{ columns: 2; padding-left: 20px; }}
nav .left-out {{ color: #888; }}
figure {{ margin: 16px 0 24px; background: #fff; border: 1px solid #e3e3e3;
         padding: {FIGURE_FRAME_PX - 1}px; }}
figure img {{ max-width: 100%; height: auto; display: block; margin: 0 auto; }}
figcaption {{ margin-top: 8px; }}
.units {{ font-size: {CAPTION_PX}px; margin: 4px 0 0; }}
.scroll {{ max-height: 420px; overflow: auto; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ text-align: left; padding: 2px 12px 2px 0; border-bottom: 1px solid #eee; }}
th {{ position: sticky; top: 0; background: #fff; }}
"""


def report_html(report, *, folder="."):
    """The page of a `kvis.report.sections.Report`, as a string.

    Args:
        report: a `Report`.
        folder: where the page will be: its links to microscope pages are relative to it.
    """
    title = f"kvis report: {report.model} on {report.image}"
    body = [f"<header><h1>{_text(title)}</h1>", f'<p class="meta">{_text(_meta(report))}</p>',
            *_warnings(report), _contents(report), "</header>", "<main>"]
    for section in report.sections:
        body.append(f'<section id="{section.key}"><h2>{_text(section.title)} '
                    f'<span class="timing">{section.seconds:.1f} s</span></h2>')
        body += [_part(part, folder) for part in section.parts]
        body += [f'<p class="notes">{_text(note)}</p>' for note in section.notes]
        body.append("</section>")
    body.append("</main>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(report, path):
    """Write the page of `report` to `path` atomically: an interrupted write leaves nothing.

    Returns:
        The Path written.

    Raises:
        KvisError: `path` cannot be written (the message names it and the cause).
    """
    page = report_html(report, folder=Path(path).parent)
    write_atomically(path, lambda temporary: Path(temporary).write_text(page, encoding="utf-8"))
    return Path(path)


def _meta(report):
    versions = ", ".join(f"{name} {_version(name)}" for name in ("kvis", "tensorflow", "keras"))
    scanned = f"; dataset: {report.data}" if report.data else ""
    mode = "quick look (--fast)" if report.fast else "full"
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{made} · {mode}, {report.seconds:.0f} s on {os.cpu_count()} CPU cores "
            f"({platform.machine()}) · {versions}{scanned}")


def _warnings(report):
    if not report.model.endswith(RANDOM_WEIGHTS):
        return []
    return ['<p class="warning">The weights of this model are random: its predictions, and '
            "the classes its maps explain, say nothing about what a trained model sees.</p>"]


def _contents(report):
    items = [f'<li><a href="#{s.key}">{_text(s.title)}</a></li>' for s in report.sections]
    items += [f'<li class="left-out">{_text(title)}: left out ({_text(reason)})</li>'
              for title, reason in report.left_out]
    return f'<nav><h2 id="contents">Contents</h2><ol>{"".join(items)}</ol></nav>'


def _part(part, folder):
    if part.png is not None:
        data = base64.b64encode(part.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{_text(part.caption)}">'
                f"<figcaption>{_text(part.caption)}</figcaption>{_links(part.links, folder)}"
                "</figure>")
    header, rows = part.table
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header) if any(header) else ""
    cells = "".join("<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>"
                    for row in rows)
    table = f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{cells}</tbody>" \
            "</table>"
    return (f'<figure><div class="scroll">{table}</div>'
            f"<figcaption>{_text(part.caption)}</figcaption></figure>")


def _links(links, folder):
    """A line of links to microscope pages, each relative to `folder` ('' without links)."""
    if not links:
        return ""
    start = os.path.abspath(folder)
    anchors = (f'<a href="{_text(quote(Path(os.path.relpath(page, start)).as_posix()))}">'
               f"{_text(label)}</a>" for label, page in links)
    return f'<p class="units">Microscope pages: {" · ".join(anchors)}</p>'


def _text(value):
    return html.escape(str(value))


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"
