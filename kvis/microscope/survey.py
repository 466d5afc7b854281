"""The microscope's survey: every number its pages show that comes from data, gathered once.

One pass over the dataset gives the dataset scan (each unit's strongest images and its
statistics, `kvis.scan`) and, from the same compiled step, every image's largest activation of
every unit (the histograms and the classes that activate a unit most). For a classifier whose
data has labels, a second pass (forward and backward) gives the class contributions of the last
surveyed layer: how much each unit adds to each class's logit on that class's images. With
concept data, network dissection (`kvis.dissect`) names the units' concepts.
"""

import dataclasses
import json
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np

from kvis.core.anatomy import conv_layers, spatial_node, stage_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.io import write_arrays
from kvis.core.progress import progress_bar
from kvis.core.runner import rows_within, run_batches
from kvis.core.targets import Target, score_pass
from kvis.dataset.dissection import Dissection, dissect
from kvis.dataset.scan import LayerStats, Scan, batch_runner, empty_scan
from kvis.dataset.sources import image_source, skipped_note
from kvis.dataset.topk import TopK

PURPOSE = "the microscope"
_FORMAT = "kvis survey 1"  # what a survey file says it is


@dataclass(frozen=True)
class Survey:
    """Everything the microscope's pages show that comes from the data.

    Attributes:
        model: the model's name.
        layers: the surveyed spatial layer paths, in input-to-output order.
        scan: the `kvis.scan` of the data over `layers` (`count` per unit, distinct images).
        peaks: {path: float32 (N, C)} each image's largest activation of each unit, one row
            per image read (N = `scan.images`), in order of image ids.
        labels: int64 (N,) the class of each of those images (-1 where unknown), or None
            when the data has no labels.
        contributions: {path: float32 (K, C)} for the last surveyed layer of a classifier
            whose data has labels: for class k, the mean over the images labelled k of
            sum over positions of A_c * d logit_k / d A_c (W[c, k] times the mean activation
            of unit c for a GlobalAveragePooling + Dense head; 0 for a class without images);
            {} otherwise.
        dissection: the `kvis.dissect` of the concept data over `layers`, or None.
    """

    model: str
    layers: tuple
    scan: Scan
    peaks: dict
    labels: np.ndarray | None
    contributions: dict
    dissection: Dissection | None


def survey(model, data, layers=None, *, labels=None, concepts=None, count=9, batch_size=32,
           memory_mb=1024, progress=True):
    """Survey a model over a dataset: the numbers of every page of its microscope.

    Args:
        model: a Keras model with conv layers.
        data: anything `kvis.image_source` takes: a folder, an IDX file, "demo", an array of
            model input (N, H, W, C), a `tf.data.Dataset`.
        layers: spatial layer paths (default: `kvis.core.anatomy.stage_layers`).
        labels: int class index per image (-1 where unknown), replacing the data's own.
        concepts: a concept dataset (`kvis.dissect`'s data) to dissect the layers on, or None.
        count: images kept per unit (9 in Zeiler & Fergus, Fig. 2).
        batch_size: images per compiled pass.
        memory_mb: the budget of one backward pass of the contributions
            (`kvis.core.runner.rows_within`).
        progress: show progress.

    Returns:
        A `Survey`.

    Raises:
        KvisError: a model without conv layers, an unknown or non-spatial layer, no layers, an
            empty dataset or one of which no image could be read, labels beyond the model's
            classes, or what `kvis.image_source`, `kvis.scan` and `kvis.dissect` raise.

    Warns:
        UserWarning: files that could not be read (skipped, counted and listed).

    Example:
        >>> found = survey(model, "demo", ["block1_pool", "block2_pool"])
        >>> found.peaks["block2_pool"][:, 7].mean()
    """
    paths = surveyed_layers(model, layers)
    source = image_source(data, labels=labels)
    wanted = has_contributions(model, source)  # labels checked before the scan
    found, ids, peaks = _scan_with_peaks(model, source, paths, count=count,
                                         batch_size=batch_size, progress=progress)
    known = None if source.labels is None else source.labels[ids]
    contributions = {}
    if wanted and np.any(known >= 0):
        contributions[paths[-1]] = class_contributions(
            model, source, paths[-1], batch_size=batch_size, memory_mb=memory_mb,
            progress=progress)
    dissection = None if concepts is None else dissect(
        model, concepts, list(paths), batch_size=batch_size, progress=progress)
    return Survey(model.name, paths, found, peaks, known, contributions, dissection)


def surveyed_layers(model, layers=None):
    """The checked paths of the layers to survey, in input-to-output order.

    Args:
        model: a Keras model.
        layers: a layer path, a list of them, or None for `stage_layers(model)`.

    Raises:
        KvisError: a model without conv layers, an unknown or non-spatial layer, no layers.
    """
    if not conv_layers(model):
        raise KvisError(f"{PURPOSE} needs a model with conv layers; {model.name!r} has none")
    graph = model_graph(model)
    chosen = stage_layers(model) if layers is None else [layers] if isinstance(layers, str) \
        else list(layers)
    if not chosen:
        raise KvisError(f"{PURPOSE}: no layers given")
    order = {path: i for i, path in enumerate(graph.nodes)}
    paths = {spatial_node(graph, layer, PURPOSE).path for layer in chosen}
    return tuple(sorted(paths, key=order.get))


def class_contributions(model, source, layer, *, batch_size=32, memory_mb=1024, progress=True):
    """How much each unit of a layer adds to each class's logit, on that class's images.

    For class k and unit c: the mean over the images labelled k of
    sum over positions of A_c * d logit_k / d A_c (one forward and backward pass per batch of
    labelled images; a final softmax is bypassed). For a GlobalAveragePooling + Dense head this
    is W[c, k] times the mean activation of c on the class's images.

    Args:
        model: a Keras classifier, output (N, K).
        source: a `kvis.dataset.sources.ImageSource` with labels (-1: unknown, left out).
        layer: a spatial layer path.
        batch_size, memory_mb, progress: as for `survey`.

    Returns:
        float32 (K, C); 0 for a class without images.

    Raises:
        KvisError: no labels, labels beyond the model's classes, or a model whose logits kvis
            cannot read (`kvis.core.anatomy.logits`).
    """
    _check_labels(model, source)
    with progress_bar(int(np.sum(source.labels >= 0)), "class contributions", unit="image",
                      progress=progress) as bar:
        totals, counts = contribution_sums(
            model, source, layer, batches=source.batches(model, batch_size=batch_size),
            batch_size=batch_size, memory_mb=memory_mb, on_batch=bar.update)
    return contribution_means(totals, counts)


def has_contributions(model, source):
    """Whether a survey of `source` gives class contributions: `model` is a classifier and
    the data has labels.

    Raises:
        KvisError: labels beyond the model's classes.
    """
    if source.labels is None or not _is_classifier(model):
        return False
    _check_labels(model, source)
    return True


def contribution_means(totals, counts):
    """float32 (K, C) the class contributions from `contribution_sums`'s (summed) totals and
    counts; 0 for a class without images."""
    return (totals / np.maximum(counts, 1)[:, None]).astype(np.float32)


def contribution_sums(model, source, layer, *, batches, batch_size=32, memory_mb=1024,
                      on_batch=None):
    """The sums behind `class_contributions` over some batches of `source`: they merge by
    addition, so shards of a dataset can be summed apart (`kvis.microscope.beam`).

    Args:
        model, source, layer, batch_size, memory_mb: as for `class_contributions`.
        batches: `kvis.dataset.readers.Batch`es of `source`.
        on_batch: called with the number of labelled images of each batch, or None.

    Returns:
        `(totals, counts)`: float64 (K, C) the sum over the labelled images of each class of
        sum over positions of A_c * d logit_k / d A_c, and int64 (K,) those images' numbers.

    Raises:
        KvisError: as for `class_contributions`.
    """
    classes = _check_labels(model, source)
    target = Target(source.labels, "logit")
    step = score_pass(model, target, layers=(layer,), gradient=layer)
    rows = rows_within(model, memory_mb, batch_size=batch_size)
    channels = spatial_node(model_graph(model), layer, PURPOSE).output.shape[-1]
    totals, counts = np.zeros((classes, channels)), np.zeros(classes, np.int64)
    for batch in batches:
        kept = source.labels[batch.ids] >= 0
        if not kept.any():
            continue
        ids = batch.ids[kept]
        outputs = run_batches(step, (batch.x[kept], *target.rows(ids)), batch_size=rows,
                              progress=False)
        per_image = np.sum(outputs[layer] * outputs["gradient"], axis=(1, 2), dtype=np.float64)
        np.add.at(totals, source.labels[ids], per_image)
        counts += np.bincount(source.labels[ids], minlength=classes)
        if on_batch is not None:
            on_batch(len(ids))
    return totals, counts


def save_survey(survey, path):
    """Write a survey to an .npz file atomically (arrays, and a JSON string of the rest).

    Args:
        survey: a `Survey`.
        path: the file, ending in .npz.

    Raises:
        KvisError: the file cannot be written.

    Example:
        >>> save_survey(found, "site/survey.npz")
    """
    index = {layer: i for i, layer in enumerate(survey.layers)}
    found = survey.scan
    arrays = {}
    for layer, i in index.items():
        top, stats = found.top[layer], found.stats[layer]
        arrays.update({f"top/{i}/values": top.values, f"top/{i}/images": top.images,
                       f"top/{i}/positions": top.positions,
                       f"stats/{i}/positions": stats.positions, f"stats/{i}/total": stats.total,
                       f"stats/{i}/peak": stats.peak, f"stats/{i}/active": stats.active,
                       f"peaks/{i}": survey.peaks[layer]})
    arrays.update({f"contributions/{index[p]}": v for p, v in survey.contributions.items()})
    if survey.labels is not None:
        arrays["labels"] = survey.labels
    dissection = None
    if survey.dissection is not None:
        dissection = {}
        for field in dataclasses.fields(survey.dissection):
            value = getattr(survey.dissection, field.name)
            if isinstance(value, np.ndarray):
                arrays[f"dissection/{field.name}"] = value
            else:
                dissection[field.name] = value
    scan_fields = {"model": found.model, "layers": found.layers, "count": int(found.count),
                   "source": found.source, "images": int(found.images),
                   "batches": int(found.batches), "strongest": found.strongest,
                   "skipped": [(int(i), str(name), str(why)) for i, name, why in found.skipped]}
    arrays["survey"] = json.dumps({
        "format": _FORMAT, "model": survey.model, "layers": survey.layers, "scan": scan_fields,
        "contributions": [index[p] for p in survey.contributions], "dissection": dissection})
    write_arrays(path, arrays)


def load_survey(path):
    """The survey `save_survey` wrote to `path`, exactly.

    Raises:
        KvisError: a missing or unreadable file, or one that is not a kvis survey.

    Example:
        >>> found = load_survey("site/survey.npz")
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        meta = json.loads(str(arrays.get("survey", "{}")))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise KvisError(f"cannot read survey {path}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise KvisError(f"{path} is not a survey that this kvis reads ({_FORMAT})")
    layers = tuple(meta["layers"])
    found = meta["scan"]
    scan = Scan(found["model"], tuple(found["layers"]), found["count"],
                {p: TopK(*(arrays[f"top/{i}/{name}"] for name in ("values", "images",
                                                                  "positions")))
                 for i, p in enumerate(layers)},
                {p: LayerStats(int(arrays[f"stats/{i}/positions"]), arrays[f"stats/{i}/total"],
                               arrays[f"stats/{i}/peak"], arrays[f"stats/{i}/active"])
                 for i, p in enumerate(layers)},
                found["source"], found["images"], [tuple(entry) for entry in found["skipped"]],
                found["batches"], found["strongest"])
    dissection = None
    if meta["dissection"] is not None:
        dissection = Dissection(**{
            field.name: arrays[f"dissection/{field.name}"] if field.name not in
            meta["dissection"] else _tupled(meta["dissection"][field.name])
            for field in dataclasses.fields(Dissection)})
    return Survey(meta["model"], layers, scan,
                  {p: arrays[f"peaks/{i}"] for i, p in enumerate(layers)}, arrays.get("labels"),
                  {layers[i]: arrays[f"contributions/{i}"] for i in meta["contributions"]},
                  dissection)


def scan_with_peaks(model, source, paths, *, batches, count, on_batch=None):
    """The scan of some batches of `source` over `paths` and their images' peaks, from one
    pass (`kvis.dataset.scan.batch_runner` with `on_peaks`); shards of a dataset merge with
    `kvis.dataset.scan.merge_scans` and by concatenating the rows.

    Args:
        model, source, paths: the model, a `kvis.dataset.sources.ImageSource`, the layers.
        batches: `kvis.dataset.readers.Batch`es of `source`.
        count: images kept per unit.
        on_batch: called with the number of images of each batch (skipped files included).

    Returns:
        `(scan, ids, peaks)`: the `Scan`, int64 (N,) the ids of the images read, and
        {path: float32 (N, C)} their peaks, rows in the order of `ids`.
    """
    state = empty_scan(model, paths, source, count=count)
    ids = [np.zeros(0, np.int64)]
    peaks = {path: [np.zeros((0, len(state.stats[path].peak)), np.float32)] for path in paths}

    def keep(batch_ids, batch_peaks):
        ids.append(batch_ids)
        for path in paths:
            peaks[path].append(batch_peaks[path])

    run = batch_runner(model, paths, count=count, on_peaks=keep)
    for batch in batches:
        state = run(state, batch)
        if on_batch is not None:
            on_batch(len(batch.x) + len(batch.skipped))
    return state, np.concatenate(ids), {path: np.concatenate(peaks[path]).astype(np.float32)
                                        for path in paths}


def checked_survey(path, model, layers, source):
    """The survey saved in `path`, checked to be of `model` over `layers` (paths) and `source`.

    Raises:
        KvisError: an unreadable file, or a survey of another model, other layers or another
            number of images.
    """
    found = load_survey(path)
    read = found.scan.images + len(found.scan.skipped)
    if found.model != model.name:
        raise KvisError(f"{path} is a survey of model {found.model!r}, not {model.name!r}")
    if found.layers != tuple(layers):
        raise KvisError(f"{path} surveys layers {', '.join(found.layers)}, not "
                        f"{', '.join(layers)}: ask for its layers or survey these")
    if source.names is not None and read != len(source.names):
        raise KvisError(f"{path} surveyed {read} images; {source.description} has "
                        f"{len(source.names)}")
    return found


def _scan_with_peaks(model, source, paths, *, count, batch_size, progress):
    """`scan_with_peaks` of all of `source`, with progress.

    Raises:
        KvisError: no image could be read.
    """
    total = None if source.names is None else len(source.names)
    with progress_bar(total, "surveying", unit="image", progress=progress) as bar:
        state, ids, peaks = scan_with_peaks(
            model, source, paths, batches=source.batches(model, batch_size=batch_size),
            count=count, on_batch=bar.update)
    if not state.images:
        raise KvisError(f"{PURPOSE}: no image of {source.description} could be read")
    if state.skipped:
        warnings.warn(skipped_note(state.skipped, state.images + len(state.skipped)),
                      stacklevel=3)
    return state, ids, peaks


def _check_labels(model, source):
    """The number of classes of a classifier, checked to cover the labels of `source`.

    Raises:
        KvisError: no labels, or labels beyond the model's classes.
    """
    classes = model.output_shape[-1]
    if source.labels is None:
        raise KvisError(f"class contributions need labels; {source.description} has none")
    if source.labels.max(initial=-1) >= classes:
        raise KvisError(f"{PURPOSE}: the labels of {source.description} go up to "
                        f"{source.labels.max()}; model {model.name!r} has {classes} classes")
    return classes


def _is_classifier(model):
    shape = model.output_shape
    return isinstance(shape, tuple) and len(shape) == 2


def _tupled(value):
    return tuple(value) if isinstance(value, list) else value
