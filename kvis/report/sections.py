"""A kvis report: every view of a model for one image (and a dataset), computed a section at a
time (`build_report`).

Each section is one function of a `*_views` module, grouped by what it looks at: the model
(`model_views`), single units (`unit_views`), the class (`explanation_views`) and a dataset
(`dataset_views`). It computes its figures through the public kvis API and captions them with
the parameters it used; a section whose capability the model (or the run) does not offer raises
`KvisError`, and the report leaves it out and says why, never draws a stand-in.
"""

import sys
import time
from dataclasses import dataclass

from kvis.core.anatomy import spatial_layers
from kvis.core.errors import KvisError
from kvis.core.images import ModelImage, as_images
from kvis.core.models import class_index, model_label
from kvis.core.vocabulary import REPORT_SECTIONS
from kvis.dataset.scan import scan
from kvis.microscope.manifest import site_of
from kvis.report import dataset_views, explanation_views, model_views, unit_views


@dataclass(frozen=True)
class Section:
    """One view of the model.

    Attributes:
        key: its name in `kvis.core.vocabulary.REPORT_SECTIONS`.
        title: its heading.
        parts: the `Part`s, in order.
        notes: lines about what the section could not show, and why.
        seconds: the time it took.
    """

    key: str
    title: str
    parts: tuple
    notes: tuple
    seconds: float


@dataclass(frozen=True)
class Report:
    """Everything a report shows (`build_report`); `write_report` makes it a page.

    Attributes:
        model: the model's name, with "(random weights)" where they are random
            (`kvis.core.models.model_label`).
        image: the image's name.
        data: what the dataset views scanned, or None.
        fast: whether the quick settings were used.
        sections: the `Section`s computed, in page order.
        left_out: `(title, reason)` of each chosen section that could not be made.
        seconds: the time all sections took.
    """

    model: str
    image: str
    data: str | None
    fast: bool
    sections: tuple
    left_out: tuple
    seconds: float


TITLES = {
    "prediction": "The image and the prediction",
    "model": "The model and its layers",
    "filters": "Filters",
    "features": "Feature maps",
    "maximization": "Activation maximization",
    "deconvnet": "Deconvnet projections",
    "attention": "Attention maps",
    "occlusion": "Occlusion sensitivity",
    "top-examples": "Top-9 dataset examples",
    "statistics": "Dead and rarely active filters",
}


def build_report(model, image, *, classes=None, sections=None, fast=False, data=None,
                 found=None, microscope=None, progress=True):
    """Compute every view of `model` for one image (and a dataset), a section at a time.

    Args:
        model: a Keras model with conv layers.
        image: one image, as every technique takes it (`kvis.load_image`).
        classes: the class the attention maps and the occlusion explain, an index or a name
            (default: the top prediction).
        sections: keys of `kvis.core.vocabulary.REPORT_SECTIONS` (default: all of them).
        fast: fewer layers, filters and methods, and shorter optimizations: a quick look.
        data: a dataset for the dataset views (anything `kvis.scan` takes); it is scanned
            unless `found` is given, and its images are read back for the top-9 examples.
        found: a `kvis.Scan` of `model` (e.g. `kvis.read_index("scan/index.json")`) to draw
            the dataset views from instead of scanning `data`.
        microscope: the folder of a `kvis.build_microscope` site of `model`: each unit the
            report shows links to its page there (where the site has one).
        progress: print a line per section with its time to stderr, and show the progress of
            the long computations in it (`kvis.core.progress`).

    Returns:
        A `Report`.

    Raises:
        KvisError: an unknown section, a model without spatial layers, an image that does not
            fit the model, an unknown class, a scan of another model, or a `microscope` that
            is no site or another model's.

    Example:
        >>> report = kvis.build_report(model, kvis.load_image("cat.jpg", model), fast=True)
        >>> kvis.write_report(report, "report.html")
    """
    chosen = list(REPORT_SECTIONS) if sections is None else list(sections)
    if unknown := [key for key in chosen if key not in REPORT_SECTIONS]:
        raise KvisError(f"unknown report section {unknown[0]!r}; choose from "
                        f"{', '.join(REPORT_SECTIONS)}")
    if not spatial_layers(model):
        raise KvisError(f"model {model.name!r} has no conv layers: a report needs feature maps")
    if found is not None and found.model != model.name:
        raise KvisError(f"the scan is of model {found.model!r}, not {model.name!r}")
    if classes is not None and len(model.output_shape) == 2:
        classes = class_index(model, classes)
    site = None if microscope is None else site_of(microscope, model)
    job = _Job(model, _one(model, image), classes, fast, data, found, progress, site=site)
    keys = [key for key in REPORT_SECTIONS if key in chosen]  # page order, once each
    done, left_out, start = [], [], time.monotonic()
    for number, key in enumerate(keys, 1):
        began, line = time.monotonic(), f"[{number}/{len(keys)}] {TITLES[key].lower()}"
        try:
            parts, notes = _BUILDERS[key](job)
        except KvisError as reason:
            left_out.append((TITLES[key], str(reason)))
            _say(progress, f"{line}: left out ({reason})")
            continue
        seconds = time.monotonic() - began
        done.append(Section(key, TITLES[key], tuple(parts), tuple(notes), seconds))
        _say(progress, f"{line}: {seconds:.1f} s")
    scanned = job.scanned.source if job.scanned is not None else None
    return Report(model_label(model), job.image.name, scanned, fast, tuple(done), tuple(left_out),
                  time.monotonic() - start)


class _Job:
    """What every section reads: the model, the image, the settings, the (lazy) scan and the
    microscope site its units link to (None: no links)."""

    def __init__(self, model, image, classes, fast, data, found, progress, *, site=None):
        self.model, self.image, self.classes, self.fast = model, image, classes, fast
        self.data, self.scanned, self.site, self.progress = data, found, site, progress

    def found(self):
        """The dataset scan, run on first use (in the first dataset section)."""
        if self.scanned is None:
            if self.data is None:
                raise KvisError("no dataset given: the dataset views need a dataset to scan, or "
                                "an earlier scan")
            self.scanned = scan(self.model, self.data, progress=self.progress)
        return self.scanned


_BUILDERS = {
    "prediction": model_views.prediction, "model": model_views.model,
    "filters": model_views.filters, "features": model_views.features,
    "maximization": unit_views.maximization, "deconvnet": unit_views.deconvnet,
    "attention": explanation_views.attention, "occlusion": explanation_views.occlusion,
    "top-examples": dataset_views.top_examples, "statistics": dataset_views.statistics,
}


def _one(model, image):
    """The report's image as a `ModelImage`, whatever form it came in."""
    images = as_images(model, image)
    if len(images.x) != 1:
        raise KvisError(f"a report explains one image; got {len(images.x)}")
    return ModelImage(images.names[0], images.pixels[0], images.x)


def _say(progress, line):
    if progress:
        print(line, file=sys.stderr, flush=True)
