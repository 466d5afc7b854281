"""The views of a kvis report: one function per section, each computing its figures through the
public kvis API and captioning them with the parameters it used.

A section whose capability the model (or the run) does not offer raises `KvisError`; the
report leaves it out and says why, never draws a stand-in.
"""

import io
import sys
import time
from dataclasses import dataclass

import numpy as np

from kvis.analyses.occlusion import occlusion, plot_occlusion
from kvis.anatomy import class_scores, conv_layers, require_classifier, spatial_layers, stage_layers
from kvis.attention_maps import attention, plot_attention
from kvis.dataset_examples import plot_top_examples, top_examples
from kvis.dataset_scan import RARE, scan
from kvis.engine import default_settings
from kvis.errors import KvisError
from kvis.features import feature_maps, plot_feature_maps, plot_feature_overview, rank_channels
from kvis.filters import conv_filters, plot_filters
from kvis.graph import model_graph, probe
from kvis.images import ModelImage, as_images
from kvis.inventory import layer_table
from kvis.maximization import maximize_filters, plot_synthesis
from kvis.models import class_index, class_label, model_info
from kvis.plot import NotebookFigure, blank_axes
from kvis.projection import deconvnet, plot_projections
from kvis.unit_statistics import filter_spectrum, plot_statistics
from kvis.vocabulary import ATTENTION_METHODS, REPORT_SECTIONS


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


@dataclass(frozen=True)
class Section:
    """One view of the model.

    Attributes:
        key: its name in `kvis.vocabulary.REPORT_SECTIONS`.
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
        model: the model's name.
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
                 found=None, progress=True):
    """Compute every view of `model` for one image (and a dataset), a section at a time.

    Args:
        model: a Keras model with conv layers.
        image: one image, as every technique takes it (`kvis.load_image`).
        classes: the class the attention maps and the occlusion explain, an index or a name
            (default: the top prediction).
        sections: keys of `kvis.vocabulary.REPORT_SECTIONS` (default: all of them).
        fast: fewer layers, filters and methods, and shorter optimizations: a quick look.
        data: a dataset for the dataset views (anything `kvis.scan` takes); it is scanned
            unless `found` is given, and its images are read back for the top-9 examples.
        found: a `kvis.Scan` of `model` (e.g. `kvis.read_index("scan/index.json")`) to draw
            the dataset views from instead of scanning `data`.
        progress: print a line per section with its time to stderr, and show the progress of
            the long computations in it (`kvis.progress`).

    Returns:
        A `Report`.

    Raises:
        KvisError: an unknown section, a model without spatial layers, an image that does not
            fit the model, an unknown class, or a scan of another model.

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
    job = _Job(model, _one(model, image), classes, fast, data, found, progress)
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
    return Report(model.name, job.image.name, scanned, fast, tuple(done), tuple(left_out),
                  time.monotonic() - start)


class _Job:
    """What every section reads: the model, the image, the settings and the (lazy) scan."""

    def __init__(self, model, image, classes, fast, data, found, progress):
        self.model, self.image, self.classes, self.fast = model, image, classes, fast
        self.data, self.scanned, self.progress = data, found, progress

    def found(self):
        """The dataset scan, run on first use (in the first dataset section)."""
        if self.scanned is None:
            if self.data is None:
                raise KvisError("no dataset given: pass data= (--dataset) or found= (--scan)")
            self.scanned = scan(self.model, self.data, progress=self.progress)
        return self.scanned


def _model(job):
    model, info = job.model, model_info(job.model)
    names = info.class_names
    summary = [("name", model.name), ("input", _shape(model.input_shape)),
               ("output", _shape(model.output_shape)), ("parameters", f"{model.count_params():,}"),
               ("preprocessing", info.preprocessing.name if info.preprocessing else "unknown"),
               ("classes", _class_summary(names, model.output_shape))]
    rows = [(row.path, row.type, _shape(row.output_shape), f"{row.params:,}",
             *_field(row.receptive_field)) for row in layer_table(model)]
    return [
        Part("The model as kvis reads it: its preprocessing is recognised from the architecture "
             "or given (--preprocess), its class names come with it or from --labels.",
             table=(("", ""), summary)),
        Part(f"All {len(rows)} layers in order, nested models opened up. Receptive field: the "
             "input patch one unit sees (size) and the step between neighbouring units (stride), "
             "in input pixels.",
             table=(("layer", "type", "output shape", "parameters", "RF size", "RF stride"),
                    rows)),
    ], []


def _prediction(job):
    require_classifier(job.model, "the prediction")
    head, read = class_scores(model_graph(job.model), "probability")
    probabilities = np.asarray(read(probe(job.model, [head])(job.image.x)[head]))[0]
    top = np.argsort(-probabilities, kind="stable")[:5]
    labels = [class_label(job.model, int(c)) for c in top]
    figure = NotebookFigure(figsize=(6.4, 2.4), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.6))
    pixels = job.image.pixels
    left.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0,
                vmax=255)
    blank_axes(left)
    right.barh(range(len(top))[::-1], probabilities[top], color="tab:blue")
    right.set_yticks(range(len(top))[::-1], labels, fontsize=8)
    right.set_xlim(0, 1)
    right.set_xlabel("softmax probability", fontsize=8)
    return [Part(f"The input as the model sees it, and its top {len(top)} of "
                 f"{len(probabilities)} classes: {labels[0]} "
                 f"({probabilities[top[0]]:.1%}).", png=_png(figure))], []


def _filters(job):
    layers = conv_layers(job.model)
    if not layers:
        raise KvisError(f"model {job.model.name!r} has no conv layers")
    shown = 32 if job.fast else 64
    first = conv_filters(job.model, layers[0])
    total = first.kernel.shape[-1]
    parts = [Part(f"{layers[0]}: {f'{shown} of its {total}' if total > shown else f'all {total}'} "
                  f"filters of {_shape(first.kernel.shape[:3])}, "
                  "each scaled to its own range (mid-gray is zero).",
                  png=_png(plot_filters(first, max_filters=shown)))]
    if not job.fast and len(layers) > 1:
        last = conv_filters(job.model, layers[-1])
        parts.append(Part(f"{layers[-1]}: the norm of each of its {last.kernel.shape[-1]} "
                          "kernels and the strongest filters, by input channel.",
                          png=_png(plot_filters(last, mode="summary"))))
    return parts, []


def _features(job):
    layers = stage_layers(job.model)
    maps = feature_maps(job.model, job.image, layers, progress=False)
    parts = [Part("The input and the last layer of each stage (resolution), its 6 strongest "
                  "feature maps by mean activation.", png=_png(plot_feature_overview(maps)))]
    top = 8 if job.fast else 16
    for layer in ([] if job.fast else layers):
        channels, scores = rank_channels(maps[layer][0])
        parts.append(Part(
            f"{layer}: the {min(top, len(channels))} strongest of its {len(channels)} feature "
            f"maps by mean activation (strongest #{channels[0]}, mean {scores[0]:.3g}).",
            png=_png(plot_feature_maps(maps, layer, top=top))))
    return parts, []


def _maximization(job):
    layers = _spread(_conv_stages(job.model), 2 if job.fast else 4)
    count, steps = (4, 64) if job.fast else (8, 256)
    maps = feature_maps(job.model, job.image, layers, progress=False)
    settings = default_settings(job.model, steps=steps)
    parts = []
    for layer in layers:
        filters = rank_channels(maps[layer][0])[0][:count]
        result = maximize_filters(job.model, layer, filters, settings=settings,
                                  progress=job.progress)
        parts.append(Part(
            f"{layer}: images that most excite the {len(filters)} filters this image excites "
            f"most ({', '.join(result.units)}), from noise by {steps} steps of gradient ascent "
            "on Fourier-space, colour-decorrelated pixels with jitter, scaling and rotation "
            "(Olah et al. 2017).", png=_png(plot_synthesis(result))))
    return parts, []


def _deconvnet(job):
    layers = _spread(stage_layers(job.model), 1 if job.fast else 3)
    top = 4 if job.fast else 8
    parts, notes = [], []
    for layer in layers:
        how = "the explicit deconvnet"
        try:
            result = deconvnet(job.model, job.image, layer, top=top, progress=job.progress)
        except KvisError as reason:  # a layer type the explicit pass does not know
            how = "the input gradient under the deconvnet rule"
            result = deconvnet(job.model, job.image, layer, top=top, method="gradient",
                               progress=job.progress)
            notes.append(f"{layer}: {reason}; projected by {how}, the same quantity")
        parts.append(Part(
            f"{layer}: the strongest activation of each of its {top} strongest feature maps, "
            f"projected to pixels by {how} (switch unpooling, rectification, transposed "
            "filters; Zeiler & Fergus 2014), beside the image patch under its receptive field.",
            png=_png(plot_projections(result))))
    return parts, notes


_METHOD_NOTES = {
    "grad-cam": "gradient-weighted feature maps (Selvaraju et al. 2017)",
    "grad-cam++": "second-order weights of the feature maps (Chattopadhay et al. 2018)",
    "score-cam": "feature maps weighted by the score of the image they mask (Wang et al. "
                 "2020)",
    "guided-grad-cam": "Grad-CAM times guided backpropagation",
    "saliency": "|gradient| of the class score (Simonyan et al. 2014)",
    "guided-backprop": "gradient through ReLUs rectified both ways (Springenberg et al. 2015)",
    "smoothgrad": "saliency averaged over noisy copies (Smilkov et al. 2017)",
    "integrated-gradients": "gradients integrated from a black image (Sundararajan et al. "
                            "2017)",
}


def _attention(job):
    require_classifier(job.model, "an attention map")
    methods = ("grad-cam", "saliency") if job.fast else ATTENTION_METHODS
    parts, notes = [], []
    for method in methods:
        try:
            result = attention(job.model, job.image, method, classes=job.classes,
                               progress=job.progress)
        except KvisError as reason:
            notes.append(f"{method}: {reason}")
            continue
        where = f" at {result.layer}" if result.layer else ""
        parts.append(Part(
            f"{method}{where}: {_METHOD_NOTES[method]}; evidence for {result.class_labels[0]} "
            f"(logit {result.scores[0]:.3g}).", png=_png(plot_attention(result))))
    if not parts:
        raise KvisError("; ".join(notes))
    return parts, notes


def _occlusion(job):
    require_classifier(job.model, "occlusion sensitivity")
    side = min(job.image.x.shape[1:3])
    size = max(1, round(side / (4 if job.fast else 6)))
    stride = max(1, size // (2 if job.fast else 3))
    result = occlusion(job.model, job.image, size=size, stride=stride, classes=job.classes,
                       progress=job.progress)
    return [Part(
        f"A {size} px square of the mean pixel slid in steps of {stride} px: the total of "
        f"{result.layer} map #{result.channel}, the probability of {result.class_label} and "
        "the most likely class at each position (Zeiler & Fergus 2014, Fig. 7), and the "
        "per-pixel mean probability drop (Captum's sensitivity).",
        png=_png(plot_occlusion(result)))], []


def _top_examples(job):
    found = job.found()
    if job.data is None:
        raise KvisError("the scan's images are needed to draw its examples; give the scanned "
                        "dataset (--dataset)")
    count = 8 if job.fast else 16
    parts = []
    for layer in (found.layers[-2:] if job.fast else found.layers):
        result = top_examples(job.model, found, job.data, layer=layer, count=count,
                              progress=job.progress)
        parts.append(Part(
            f"{layer}: the {found.k} strongest activations over {found.images:,} images "
            f"({found.source}) of its {len(result.channels)} most active channels, each "
            "activation's deconvnet projection beside its image patch (Zeiler & Fergus 2014, "
            "Fig. 2).", png=_png(plot_top_examples(result))))
    return parts, []


def _statistics(job):
    found = job.found()
    rows = [(layer, str(len(stats.active)), _listed(stats.dead), _listed(stats.rare))
            for layer, stats in ((layer, found.stats[layer]) for layer in found.layers)]
    parts = [
        Part(f"Per channel over {found.images:,} images ({found.source}): dead channels are "
             f"never positive; rare ones are positive at under {RARE:.0%} of positions.",
             table=(("layer", "channels", "dead", "rarely active"), rows)),
        Part("Mean activation, peak and fraction of positions active of every channel.",
             png=_png(plot_statistics(found)))]
    notes = []
    try:
        notes.append(f"First-layer filters: {filter_spectrum(job.model).summary()} (energy "
                     "above it aliases; Zeiler & Fergus 2014, section 4.1).")
    except KvisError as reason:
        notes.append(f"no filter spectrum: {reason}")
    return parts, notes


_BUILDERS = {
    "prediction": _prediction, "model": _model, "filters": _filters, "features": _features,
    "maximization": _maximization, "deconvnet": _deconvnet, "attention": _attention,
    "occlusion": _occlusion, "top-examples": _top_examples, "statistics": _statistics,
}


def _one(model, image):
    """The report's image as a `ModelImage`, whatever form it came in."""
    images = as_images(model, image)
    if len(images.x) != 1:
        raise KvisError(f"a report explains one image; got {len(images.x)}")
    return ModelImage(images.names[0], images.pixels[0], images.x)


def _conv_stages(model):
    """The stages' last layers, each stepped back to the conv layer that feeds it when it is
    a pooling layer (a filter is a conv layer's channel)."""
    convs = conv_layers(model)
    order = {path: i for i, path in enumerate(model_graph(model).nodes)}
    chosen = []
    for layer in stage_layers(model):
        if "pool" in type(model_graph(model).nodes[layer].layer).__name__.lower():
            before = [c for c in convs if order[c] < order[layer]]
            layer = before[-1] if before else layer
        if layer not in chosen:
            chosen.append(layer)
    return chosen


def _spread(layers, count):
    """`count` layers spread from shallow to deep, the deepest always included."""
    if len(layers) <= count:
        return list(layers)
    picks = np.linspace(len(layers) - 1, 0, count, endpoint=False)[::-1]
    return [layers[int(round(i))] for i in picks]


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _shape(shape):
    return "×".join("N" if d is None else str(d) for d in shape)


def _field(field):
    if field is None:
        return "", ""
    return "×".join(map(str, field.size)), "×".join(map(str, field.stride))


def _class_summary(names, output_shape):
    if names is None:
        return f"{output_shape[-1]} (names unknown)"
    shown = ", ".join(names[:10])
    return f"{len(names)}: {shown}{', ...' if len(names) > 10 else ''}"


def _listed(channels, shown=16):
    if not len(channels):
        return "none"
    listed = ", ".join(f"#{c}" for c in channels[:shown])
    return f"{len(channels)}: {listed}{', ...' if len(channels) > shown else ''}"


def _say(progress, line):
    if progress:
        print(line, file=sys.stderr, flush=True)
