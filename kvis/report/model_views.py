"""The report's sections about the model itself: the prediction, the layers, the filters and
the feature maps."""

import math

import numpy as np
from matplotlib.ticker import PercentFormatter

from kvis.core.anatomy import conv_layers, stage_layers
from kvis.core.errors import KvisError
from kvis.core.models import class_label, model_info
from kvis.core.runner import run_batches
from kvis.core.targets import make_target, score_pass
from kvis.layers.feature_maps import (
    feature_maps,
    plot_feature_maps,
    plot_feature_overview,
    rank_channels,
)
from kvis.layers.filters import conv_filters, plot_filters
from kvis.layers.inventory import layer_table
from kvis.plot.figures import NotebookFigure, blank_axes, fit_texts, png_bytes, show_image
from kvis.report.page import FIGURE_DPI
from kvis.report.parts import Part, shape_text


def prediction(job):
    target = make_target(job.model, 1, score="probability", purpose="the prediction")
    probabilities = run_batches(score_pass(job.model, target, every_score=True),
                                (job.image.x,), progress=False)["every_score"][0]
    top = np.argsort(-probabilities, kind="stable")[:5]
    labels = [class_label(job.model, int(c)) for c in top]
    return [Part(f"The input as the model sees it, and its top {len(top)} of "
                 f"{len(probabilities)} classes: {labels[0]} ({probabilities[top[0]]:.1%}); "
                 f"the axis ends at {_axis_end(probabilities[top]):.0%}.",
                 png=png_bytes(prediction_figure(job.image.pixels, labels, probabilities[top]),
                               dpi=FIGURE_DPI))], []


def prediction_figure(pixels, labels, probabilities):
    """The image beside a bar per class, labelled with its probability, on an axis that ends
    just past the largest (`_axis_end`), so that a low-confidence prediction shows too."""
    figure = NotebookFigure(figsize=(6.4, 2.4), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.6))
    show_image(left, pixels)
    blank_axes(left)
    at = np.arange(len(labels))[::-1]
    bars = right.barh(at, probabilities, color="tab:blue")
    right.bar_label(bars, [f"{p:.1%}" for p in probabilities], padding=2, fontsize=8)
    right.set_yticks(at, labels, fontsize=8)
    right.set_xlim(0, _axis_end(probabilities))
    right.xaxis.set_major_formatter(PercentFormatter(1.0))
    right.tick_params(labelsize=8)
    right.set_xlabel("softmax probability", fontsize=8)
    return fit_texts(figure)


def _axis_end(probabilities):
    """Where the probability axis ends: a quarter past the largest, in steps of 5%, at most 1."""
    return min(1.0, math.ceil(float(np.max(probabilities)) * 1.25 * 20) / 20)


def model(job):
    model, info = job.model, model_info(job.model)
    names = info.class_names
    summary = [("name", model.name), ("input", shape_text(model.input_shape)),
               ("output", shape_text(model.output_shape)),
               ("parameters", f"{model.count_params():,}"),
               ("preprocessing", info.preprocessing.name if info.preprocessing else "unknown"),
               ("classes", _class_summary(names, model.output_shape))]
    rows = [(row.path, row.type, shape_text(row.output_shape), f"{row.params:,}",
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


def filters(job):
    layers = conv_layers(job.model)
    if not layers:
        raise KvisError(f"model {job.model.name!r} has no conv layers")
    shown = 32 if job.fast else 64
    first = conv_filters(job.model, layers[0])
    total = first.kernel.shape[-1]
    parts = [Part(f"{layers[0]}: {f'{shown} of its {total}' if total > shown else f'all {total}'} "
                  f"filters of {shape_text(first.kernel.shape[:3])}, all on one scale, "
                  f"±{first.scale:.3g} (mid-gray is zero).",
                  png=png_bytes(plot_filters(first, count=shown), dpi=FIGURE_DPI))]
    if not job.fast and len(layers) > 1:
        last = conv_filters(job.model, layers[-1])
        parts.append(Part(f"{layers[-1]}: the norm of each of its {last.kernel.shape[-1]} "
                          "kernels by input channel, and its "
                          f"{min(16, last.kernel.shape[-1])} strongest filters at their "
                          f"dominant input channel, all on one scale, ±{last.scale:.3g}.",
                          png=png_bytes(plot_filters(last, mode="summary"), dpi=FIGURE_DPI)))
    return parts, []


def features(job):
    layers = stage_layers(job.model)
    maps = feature_maps(job.model, job.image, layers, progress=False)
    shown = 6
    parts = [Part(f"The last layer of each of the {len(maps.stages)} stages (resolutions): its "
                  f"mean over channels laid over the input, then its {shown} strongest feature "
                  "maps by mean activation, each map on its own scale.",
                  png=png_bytes(plot_feature_overview(maps, count=shown), dpi=FIGURE_DPI))]
    count = 8 if job.fast else 16
    for layer in ([] if job.fast else layers):
        channels, scores = rank_channels(maps[layer][0])
        parts.append(Part(
            f"{layer}: the {min(count, len(channels))} strongest of its {len(channels)} feature "
            f"maps by mean activation (strongest #{channels[0]}, mean {scores[0]:.3g}).",
            png=png_bytes(plot_feature_maps(maps, layer=layer, count=count), dpi=FIGURE_DPI)))
    return parts, []


def _field(field):
    if field is None:
        return "", ""
    return "×".join(map(str, field.size)), "×".join(map(str, field.stride))


def _class_summary(names, output_shape):
    if names is None:
        return f"{output_shape[-1]} (names unknown)"
    shown = ", ".join(names[:10])
    return f"{len(names)}: {shown}{', ...' if len(names) > 10 else ''}"
