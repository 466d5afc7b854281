"""`build_microscope`: a static website of every unit of a model, built from one survey of a
dataset, written incrementally and atomically so that an interrupted build resumes.

The order: the manifest is checked (another model's site is refused by name, this model's is
finished with `resume` or replaced with `overwrite`); the survey (one pass over the data, kept
in the site); the dataset-driven images and every page; then activation maximization, its cost
estimated first, each unit's page (and its layer's tiles) rewritten as its images arrive.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kvis.core.anatomy import conv_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.io import check_writable, write_atomically
from kvis.core.models import model_info, model_label
from kvis.core.progress import progress_bar
from kvis.dataset.sources import image_source
from kvis.dataset.statistics import filter_spectrum
from kvis.layers.inventory import layer_table
from kvis.microscope import assets, facts, images, layout, manifest, pages
from kvis.microscope.survey import (
    checked_survey,
    load_survey,
    save_survey,
    survey,
    surveyed_layers,
)
from kvis.microscope.wiring import wiring
from kvis.synthesis.render import default_settings

COUNT = 9  # top examples per unit (Zeiler & Fergus, Fig. 2)
_log = logging.getLogger("kvis.microscope")


@dataclass
class _Build:
    """What every step of a build reads."""

    model: object
    data: object
    labels: object
    out: Path
    layers: tuple
    settings: object
    seeds: int
    batch_size: int
    progress: bool
    names: list = None
    image_labels: object = None
    class_names: list = None
    survey: object = None
    into: dict = None
    out_of: dict = None
    table: dict = None
    spectrum: str = None


def build_microscope(model, data, out, *, layers=None, labels=None, concepts=None,
                     maximize=None, seeds=3, steps=None, resume=False, overwrite=False,
                     batch_size=32, survey=None, progress=True):
    """Write a microscope of `model`: a static website with a page for every unit of the
    chosen layers, what excites it in `data`, its maximization images, and what feeds it.

    Args:
        model: a Keras model with conv layers.
        data: the dataset (anything `kvis.image_source` takes: a folder, an IDX file, "demo",
            an array of model input, a `tf.data.Dataset`).
        out: the site's folder (docs/microscope.md shows its layout).
        layers: spatial layer paths (default: `kvis.core.anatomy.stage_layers`).
        labels: a class index per image of `data` (-1 where unknown), as for
            `kvis.image_source`; a folder of class subfolders, an IDX file with its labels file
            and "demo" carry their own.
        concepts: a concept dataset (as for `kvis.dissect`): each unit's best concepts.
        maximize: the units to maximize, `{layer: channels}` (channels None: all of the
            layer's), `{}` for none; default: every unit of `layers`.
        seeds: maximization images per unit, each from other starting noise.
        steps: gradient steps per image (default: `default_settings(model).steps`).
        resume: finish the site in `out` (it must be of this model, data and settings).
        overwrite: replace the site in `out`.
        batch_size: images per pass, and units optimized together.
        survey: a survey file of `model` over `data` and `layers` (from
            `kvis.microscope.beam.survey_on_beam` or `save_survey`), used instead of
            surveying the data here; its dissection, if any, gives the concepts.
        progress: show progress.

    Returns:
        The Path of the site's index.html.

    Raises:
        KvisError: a model without conv layers, a layer that is not spatial, an empty or
            unreadable dataset, bad `maximize`, `seeds` or `batch_size`, a `survey` of another
            model, layers or number of images, or with `concepts`, an `out` that cannot be
            written or that holds a site this call must not touch (another model's; this
            model's without `resume` or `overwrite`), or a write that fails midway (what was
            written stays valid: `resume` finishes it).

    Example:
        >>> kvis.build_microscope(model, "photos/", "site/", maximize={"block5_conv3": None})
    """
    paths = surveyed_layers(model, layers)
    if int(seeds) < 1 or int(batch_size) < 1:
        raise KvisError(f"seeds and batch_size must be at least 1; got {seeds} and {batch_size}")
    source = image_source(data, labels=labels)
    if survey is not None and concepts is not None:
        raise KvisError(f"concepts come from the survey {survey} (its dissection, if any); "
                        "pass concepts or a survey, not both")
    given = None if survey is None else checked_survey(survey, model, paths, source)
    plan = _plan(model, paths, maximize)
    settings = default_settings(model, **({} if steps is None else {"steps": steps}))
    out = Path(out)
    check_writable(out / layout.MANIFEST)
    record = {"layers": list(paths), "data": source.description, "seeds": int(seeds),
              "steps": settings.steps, "count": COUNT,
              "concepts": None if concepts is None else str(concepts)}
    state = manifest.prepare(out, manifest.fingerprint(model), record, resume=resume,
                             overwrite=overwrite)
    build = _Build(model, data, labels, out, paths, settings, int(seeds), int(batch_size),
                   progress, names=source.names, image_labels=source.labels,
                   class_names=model_info(model).class_names or source.class_names,
                   survey=given)
    build.table = {row.path: row for row in layer_table(model)}
    build.spectrum = _spectrum(model)
    try:
        _survey(build, state, concepts)
        _pages(build)
        manifest.finish(out, state, "pages")
        _maximize(build, plan)
        manifest.finish(out, state, "maximization")
    except KvisError as error:
        raise KvisError(f"{error}; what was written is kept: run again with resume (--resume) "
                        "to finish the site") from None
    return out / layout.INDEX


def _plan(model, paths, maximize):
    """`{layer: sorted channels}` to maximize, in layer order."""
    graph = model_graph(model)
    sizes = {path: graph.nodes[path].output.shape[-1] for path in paths}
    if maximize is None:
        return {path: list(range(sizes[path])) for path in paths}
    chosen = {}
    for layer, channels in dict(maximize).items():
        match = [path for path in paths if path == layer or path.endswith("/" + layer)]
        if len(match) != 1:
            raise KvisError(f"cannot maximize units of {layer!r}: it is not one of the "
                            f"surveyed layers ({', '.join(paths)})")
        size = sizes[match[0]]
        channels = range(size) if channels is None else sorted({int(c) for c in channels})
        if bad := [c for c in channels if not 0 <= c < size]:
            raise KvisError(f"{match[0]} unit {bad[0]} is out of range (0-{size - 1})")
        chosen[match[0]] = list(channels)
    return {path: chosen[path] for path in paths if chosen.get(path)}


def _survey(build, state, concepts):
    """The survey: the one given, or read from the site where a build already made it, else
    made; saved in the site."""
    path = build.out / layout.SURVEY
    done = "survey" in state["finished"] and path.is_file()
    if done and build.survey is None:
        build.survey = load_survey(path)
    elif not done:
        if build.survey is None:
            _log.info("surveying the data over %s", ", ".join(build.layers))
            build.survey = survey(build.model, build.data, build.layers, labels=build.labels,
                                  concepts=concepts, count=COUNT, batch_size=build.batch_size,
                                  progress=build.progress)
        manifest.write(build.out, state)
        save_survey(build.survey, path)
        manifest.finish(build.out, state, "survey")
    if build.names is None:
        build.names = [f"image {i}" for i in range(build.survey.scan.images)]
    build.into = {layer: wiring(build.model, before, layer)
                  for before, layer in zip(build.layers, build.layers[1:])}
    build.out_of = dict(zip(build.layers, build.into.values()))


def _pages(build):
    """The dataset-driven images, then every page, the search index and the assets."""
    _write(build.out / layout.STYLE, assets.STYLE)
    _write(build.out / layout.SCRIPT, assets.SCRIPT)
    todo = [(layer, chunk) for layer in build.layers
            for chunk in images.chunks(range(_size(build, layer)), images.EXAMPLE_CHUNK)
            if images.missing(build.out, layer, chunk, (layout.EXAMPLES, layout.PATCH))]
    _log.info("top examples of %d units", sum(len(chunk) for _, chunk in todo))
    with progress_bar(sum(len(chunk) for _, chunk in todo), "top examples", unit="unit",
                      progress=build.progress) as bar:
        for layer, chunk in todo:
            images.write_examples(build.model, build.survey.scan, build.data, build.out,
                                  layer=layer, channels=chunk, labels=build.labels,
                                  batch_size=build.batch_size, progress=False)
            bar.update(len(chunk))
    first = conv_layers(build.model)[0]
    images.write_filters(build.model, build.out, conv=first, layer=build.layers[0])
    units = sum(_size(build, layer) for layer in build.layers)
    with progress_bar(units, "pages", unit="page", progress=build.progress) as bar:
        for layer in build.layers:
            _layer_page(build, layer)
            for channel in range(_size(build, layer)):
                _unit_page(build, layer, channel)
            bar.update(_size(build, layer))
    for index in range(facts.class_count(build.survey)):
        found = facts.class_facts(build.survey, index, class_names=build.class_names)
        _write(build.out / layout.class_page(index),
               pages.class_page(found, model=model_label(build.model)))
    _write(build.out / layout.INDEX, pages.model_page(_model_info(build)))
    _write(build.out / layout.SEARCH_INDEX, _search_index(build))


def _maximize(build, plan):
    """Activation maximization of the planned units, in fixed batches; each batch's unit pages
    and its layer's page are rewritten as its images arrive."""
    names = [(layout.maximization(seed), layout.maximization_score(seed))
             for seed in range(build.seeds)]
    todo = {layer: [chunk for chunk in images.chunks(channels, build.batch_size)
                    if images.missing(build.out, layer, chunk, sum(names, ()))]
            for layer, channels in plan.items()}
    units = sum(len(chunk) for chunks in todo.values() for chunk in chunks)
    if not units:
        return
    remaining = {layer: [c for chunk in chunks for c in chunk] for layer, chunks in todo.items()}
    estimate, _ = images.maximization_seconds(build.model, remaining, settings=build.settings,
                                              batch_size=build.batch_size, seeds=build.seeds)
    _log.info("activation maximization: %d units x %d seeds x %d steps, about %s",
              units, build.seeds, build.settings.steps, _duration(estimate))
    start = time.perf_counter()
    with progress_bar(units * build.seeds, "maximizing", unit="image",
                      progress=build.progress) as bar:
        for layer, chunks in todo.items():
            for chunk in chunks:
                for seed, files in enumerate(names):
                    if images.missing(build.out, layer, chunk, files):
                        images.write_maximization(build.model, build.out, layer=layer,
                                                  channels=chunk, seed=seed,
                                                  settings=build.settings, progress=False)
                    bar.update(len(chunk))
                for channel in chunk:
                    _unit_page(build, layer, channel)
                _layer_page(build, layer)
    _log.info("activation maximization took %s (estimated %s)",
              _duration(time.perf_counter() - start), _duration(estimate))


def _unit_page(build, layer, channel):
    found = facts.unit_facts(build.survey, layer, channel, names=build.names,
                             labels=build.image_labels,
                             class_names=build.class_names, into=build.into.get(layer),
                             out_of=build.out_of.get(layer))
    found["maximization"] = _made(build, layer, channel)
    _write(build.out / layout.unit_page(layer, channel),
           pages.unit_page(found, model=model_label(build.model),
                           steps=build.settings.steps, examples=_examples_caption(build)))


def _made(build, layer, channel):
    """The seeds whose maximization image of a unit exists, with the score each reached."""
    made = []
    for seed in range(build.seeds):
        score = build.out / layout.unit_image(layer, channel, layout.maximization_score(seed))
        if score.is_file() and _exists(build, layer, channel, layout.maximization(seed)):
            made.append({"seed": seed, "score": float(score.read_text())})
    return made


def _layer_page(build, layer):
    at = build.layers.index(layer)
    row = build.table[layer]
    field = row.receptive_field
    maximized = {c for c in range(_size(build, layer))
                 if _exists(build, layer, c, layout.maximization(0))}
    info = {"model": model_label(build.model), "shape": _shape(row.output_shape),
            "field": "unknown" if field is None else
            f"{'×'.join(map(str, field.size))}, stride {'×'.join(map(str, field.stride))}",
            "fed_by": _fed_by(build, at), "filters": None, "spectrum": None}
    if at == 0:
        info["filters"] = conv_layers(build.model)[0]
        info["spectrum"] = build.spectrum
    _write(build.out / layout.layer_page(layer),
           pages.layer_page(facts.layer_facts(build.survey, layer), info=info,
                            maximized=maximized, prev=build.layers[at - 1] if at else None,
                            next=build.layers[at + 1] if at + 1 < len(build.layers) else None))


def _fed_by(build, at):
    if at == 0:
        return "fed by the input image"
    found = build.into[build.layers[at]]
    if found is None:
        return (f"fed by {build.layers[at - 1]} through branches, merges or layers that mix "
                "units: no unit-to-unit wiring shown")
    if not found.convs:
        return f"fed by {found.source}, unit to unit"
    return f"fed by {found.source} through {', '.join(found.convs)}"


def _model_info(build):
    scan = build.survey.scan
    rows = []
    for row in build.table.values():
        surveyed = row.path in build.layers
        stats = scan.stats[row.path] if surveyed else None
        field = row.receptive_field
        rows.append({"path": row.path, "type": row.type, "shape": _shape(row.output_shape),
                     "params": row.params,
                     "field_size": "" if field is None else "×".join(map(str, field.size)),
                     "field_stride": "" if field is None else "×".join(map(str, field.stride)),
                     "surveyed": surveyed, "channels": len(stats.peak) if surveyed else None,
                     "dead": len(stats.dead) if surveyed else None,
                     "rare": len(stats.rare) if surveyed else None})
    model = build.model
    summary = [("model", model.name), ("input", _shape(model.input_shape)),
               ("output", _shape(model.output_shape)),
               ("parameters", f"{model.count_params():,}"), ("data", scan.source),
               ("images surveyed", f"{scan.images:,}"
                + (f" ({len(scan.skipped):,} unreadable files skipped)" if scan.skipped else "")),
               ("layers surveyed", ", ".join(build.layers)),
               ("activation maximization", f"{build.seeds} seeds of {build.settings.steps} "
                                           "steps per unit")]
    if build.survey.dissection is not None:
        summary.append(("concepts", f"{len(build.survey.dissection.concepts)} "
                                    f"({build.survey.dissection.images:,} images)"))
    classes = [{"class": k, "name": facts.class_name(build.class_names, k)}
               for k in range(facts.class_count(build.survey))]
    return {"model": model_label(model), "summary": summary, "layers": rows,
            "random_weights": model_info(model).random_weights, "classes": classes}


def _search_index(build):
    layers = [(path, quote(layout.layer_page(path)), quote(layout.unit_folder(path)),
               _size(build, path)) for path in build.layers]
    concepts = []
    for number, layer in enumerate(build.layers):
        for tile in facts.layer_facts(build.survey, layer)["tiles"]:
            if tile["concept"] is not None:
                concepts.append((number, tile["channel"], tile["concept"], tile["iou"]))
    classes = [(k, facts.class_name(build.class_names, k), quote(layout.class_page(k)))
               for k in range(facts.class_count(build.survey))]
    return assets.search_index(layers, concepts, classes)


def _examples_caption(build):
    count = build.survey.scan.count
    if build.survey.scan.strongest == "images":
        return f"The {count} images that excite it most, each at its strongest position"
    return f"Its {count} strongest positions (an image can hold several)"


def _size(build, layer):
    return len(build.survey.scan.stats[layer].peak)


def _exists(build, layer, channel, name):
    return (build.out / layout.unit_image(layer, channel, name)).is_file()


def _spectrum(model):
    """The first conv layer's frequency summary, or None where kvis cannot compute it."""
    try:
        return filter_spectrum(model).summary()
    except KvisError:
        return None


def _shape(shape):
    return "×".join("N" if d is None else str(d) for d in shape)


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _write(path, text):
    write_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
