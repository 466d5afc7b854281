"""The images of a microscope site, written atomically as PNG files: each unit's top examples
(deconvnet projections beside image patches) and strongest patch, its activation-maximization
images, and the first conv layer's filters.

Work is done in fixed chunks of units, and a chunk is done again whole when one of its files is
missing: a resumed build computes exactly the batches an uninterrupted one does, so it writes
the same bytes.
"""

import math
import time
from pathlib import Path

import numpy as np

from kvis.core.io import write_atomically, write_image
from kvis.dataset.examples import example_mosaic, top_examples
from kvis.layers.filters import conv_filters, plot_filters
from kvis.microscope import layout
from kvis.plot.figures import png_bytes
from kvis.synthesis.maximize import maximize_filters

EXAMPLE_CHUNK = 16  # units whose top examples are projected together


def chunks(channels, size):
    """`channels` in consecutive groups of `size` (the last may be smaller)."""
    channels = [int(c) for c in channels]
    return [channels[i:i + size] for i in range(0, len(channels), size)]


def missing(out, layer, channels, names):
    """Whether any of `channels` lacks one of the image files `names`."""
    return any(not (Path(out) / layout.unit_image(layer, c, name)).is_file()
               for c in channels for name in names)


def write_examples(model, found, data, out, *, layer, channels, labels=None, batch_size=32,
                   progress=True):
    """Write each unit's top examples (`layout.EXAMPLES`: projections | patches, as
    `kvis.dataset.examples.example_mosaic` lays them out) and its strongest patch
    (`layout.PATCH`).

    Args:
        model, found, data, labels: as for `kvis.dataset.examples.top_examples`.
        out: the site's folder.
        layer: a scanned layer.
        channels: the units.
        batch_size: projections per compiled pass.
        progress: show progress.
    """
    result = top_examples(model, found, data, layer=layer, channels=channels, labels=labels,
                          batch_size=batch_size, progress=progress)
    for i, channel in enumerate(result.channels):
        write_image(Path(out) / layout.unit_image(layer, channel, layout.EXAMPLES),
                    _uint8(example_mosaic(result, i, gap=1)))
        write_image(Path(out) / layout.unit_image(layer, channel, layout.PATCH),
                    result.patches[i, 0])


def write_maximization(model, out, *, layer, channels, seed, settings, progress=True):
    """Write the activation-maximization image of each unit from one seed
    (`layout.maximization(seed)`), all units in one batch (`kvis.maximize_filters`), each after
    the mean activation it reaches (`layout.maximization_score(seed)`, a number as text)."""
    result = maximize_filters(model, layer, channels, seed=seed, batch_size=len(channels),
                              settings=settings, progress=progress)
    for channel, image, score in zip(channels, result.images, result.scores):
        text = f"{float(score)!r}\n"
        write_atomically(Path(out) / layout.unit_image(layer, channel,
                                                      layout.maximization_score(seed)),
                         lambda temporary, text=text: Path(temporary).write_text(text))
        write_image(Path(out) / layout.unit_image(layer, channel, layout.maximization(seed)),
                    _uint8(image))


def write_filters(model, out, *, conv, layer):
    """Write the filters of the conv layer `conv` as an image of `layer`'s page
    (`layout.FILTERS`), unless it exists."""
    path = Path(out) / layout.layer_image(layer, layout.FILTERS)
    if path.is_file():
        return
    png = png_bytes(plot_filters(conv_filters(model, conv)), dpi=100)
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(png))


def maximization_seconds(model, plan, *, settings, batch_size, seeds):
    """The time activation maximization will take, estimated before it starts.

    For each layer one chunk of steps (`settings.chunk`) is run on a batch of the size the
    layer will use, twice: the first call compiles the step that the real run reuses, the
    second is timed; the time is scaled to the steps, batches and seeds.

    Args:
        model: the Keras model.
        plan: `{layer: [channels]}` the units to maximize.
        settings: the `kvis.synthesis.render.Settings` of the run.
        batch_size: units per batch.
        seeds: images per unit.

    Returns:
        `(seconds, {layer: seconds of one timed chunk})`.
    """
    probe = settings.replace(steps=min(settings.steps, settings.chunk))
    total, measured = 0.0, {}
    for layer, channels in plan.items():
        if not channels:
            continue
        batch = channels[:batch_size]
        for _ in range(2):  # the first call compiles, the second is timed
            start = time.perf_counter()
            maximize_filters(model, layer, batch, batch_size=len(batch), settings=probe,
                             progress=False)
        measured[layer] = time.perf_counter() - start
        total += (measured[layer] * settings.steps / probe.steps
                  * math.ceil(len(channels) / batch_size) * seeds)
    return total, measured


def _uint8(image):
    """float [0, 1] -> uint8 [0, 255]."""
    return np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
