"""The report's sections about single units: activation maximization and deconvnet
projections."""

import numpy as np

from kvis.core.anatomy import conv_layers, stage_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.deconv.deconvnet import deconvnet as project
from kvis.deconv.deconvnet import plot_projections
from kvis.layers.feature_maps import feature_maps, rank_channels
from kvis.plot.figures import png_bytes
from kvis.report.page import FIGURE_DPI
from kvis.report.parts import Part, unit_links
from kvis.synthesis.maximize import maximize_filters, plot_synthesis
from kvis.synthesis.render import default_settings


def maximization(job):
    layers = _spread(_conv_stages(job.model), 2 if job.fast else 4)
    count, steps = (4, 64) if job.fast else (8, 256)
    maps = feature_maps(job.model, job.image, layers, progress=False)
    settings = default_settings(job.model, steps=steps)
    parts = []
    for layer in layers:
        channels = rank_channels(maps[layer][0])[0][:count]
        result = maximize_filters(job.model, layer, channels, settings=settings,
                                  progress=job.progress)
        parts.append(Part(
            f"{layer}: images that most excite the {len(channels)} filters this image excites "
            f"most ({', '.join(result.units)}), from noise by {steps} steps of gradient ascent "
            "on Fourier-space, colour-decorrelated pixels with jitter, scaling and rotation "
            "(Olah et al. 2017).", png=png_bytes(plot_synthesis(result), dpi=FIGURE_DPI),
            links=unit_links(job.site, layer, channels)))
    return parts, []


def deconvnet(job):
    # A max-pooling stage keeps its conv layer's peaks: the same channels, values and
    # projections, so the conv layer stands for it.
    layers = _spread(_conv_stages(job.model), 1 if job.fast else 3)
    count = 4 if job.fast else 8
    parts, notes = [], []
    for layer in layers:
        how = "the explicit deconvnet"
        try:
            result = project(job.model, job.image, layer, count=count, progress=job.progress)
        except KvisError as reason:  # a layer type the explicit pass does not know
            how = "the input gradient under the deconvnet rule"
            result = project(job.model, job.image, layer, count=count, method="gradient",
                             progress=job.progress)
            notes.append(f"{layer}: {reason}; projected by {how}, the same quantity")
        parts.append(Part(
            f"{layer}: the strongest activation of each of its {count} strongest feature maps, "
            f"projected to pixels by {how} (switch unpooling, rectification, transposed "
            "filters; Zeiler & Fergus 2014), beside the image patch under its receptive field.",
            png=png_bytes(plot_projections(result), dpi=FIGURE_DPI),
            links=unit_links(job.site, layer, result.channels)))
    return parts, notes


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
