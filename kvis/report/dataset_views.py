"""The report's sections over a dataset: the top-9 examples and the activity statistics."""

from kvis.core.errors import KvisError
from kvis.dataset.examples import examples_caption, plot_top_examples
from kvis.dataset.examples import top_examples as examples_of
from kvis.dataset.scan import RARE
from kvis.dataset.sources import skipped_note
from kvis.dataset.statistics import filter_spectrum, plot_statistics
from kvis.plot.figures import png_bytes
from kvis.report.page import FIGURE_DPI
from kvis.report.parts import Part, unit_links


def top_examples(job):
    found = job.found()
    if job.data is None:
        raise KvisError("the examples are drawn from the scanned images: give the dataset "
                        "that was scanned as well")
    count = 8 if job.fast else 16
    parts = []
    for layer in (found.layers[-2:] if job.fast else found.layers):
        result = examples_of(job.model, found, job.data, layer=layer, count=count,
                             progress=job.progress)
        parts.append(Part(
            f"{layer}: {examples_caption(result)}, over {found.images:,} images "
            f"({found.source}), for the {len(result.channels)} channels with the strongest "
            "activation; each activation's deconvnet projection beside its image patch "
            "(Zeiler & Fergus 2014, Fig. 2).",
            png=png_bytes(plot_top_examples(result), dpi=FIGURE_DPI),
            links=unit_links(job.site, layer, result.channels)))
    return parts, _skipped(found)


def statistics(job):
    found = job.found()
    stats = found.checked_stats("the statistics section")
    rows = [(layer, str(len(stats[layer].active)), _listed(stats[layer].dead),
             _listed(stats[layer].rare)) for layer in found.layers]
    parts = [
        Part(f"Per channel over {found.images:,} images ({found.source}): dead channels are "
             f"never positive; rare ones are positive at under {RARE:.0%} of positions.",
             table=(("layer", "channels", "dead", "rarely active"), rows)),
        Part("Mean activation, peak and fraction of positions active of every channel.",
             png=png_bytes(plot_statistics(found), dpi=FIGURE_DPI))]
    notes = _skipped(found)
    try:
        notes.append(f"First-layer filters: {filter_spectrum(job.model).summary()} (energy "
                     "above it aliases; Zeiler & Fergus 2014, section 4.1).")
    except KvisError as reason:
        notes.append(f"no filter spectrum: {reason}")
    return parts, notes


def _skipped(found):
    """The section's note on the files the scan could not read (none when it read them all)."""
    if not found.skipped:
        return []
    note = skipped_note(found.skipped, found.images + len(found.skipped))
    return [f"{note[0].upper()}{note[1:]}."]


def _listed(channels, shown=16):
    if not len(channels):
        return "none"
    listed = ", ".join(f"#{c}" for c in channels[:shown])
    return f"{len(channels)}: {listed}{', ...' if len(channels) > shown else ''}"
