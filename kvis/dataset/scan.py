"""The dataset scan: one streaming pass that keeps, for every channel of the chosen layers, the
`count` strongest images or positions (Zeiler & Fergus, Fig. 2: 9 images) and the statistics
that diagnose a model (dead and rarely active channels).

Each batch goes through one compiled pass that returns, per layer, the batch's top `count` per
channel (`tf.math.top_k` on the device; a position is searched only where a value reaches the
state's `count`-th, so late in a scan only a few maps are) and, where the statistics are asked
for (the default), the per-channel sums, maxima and active counts; the host merges them into states
whose size depends on layers x channels x count, never on the dataset (a channel is merged only
where the batch reaches its state: `kvis.dataset.topk.admit`). The states merge exactly for any
split of the data (`kvis.dataset.topk`), so a scan can be checkpointed every few batches and
resumed, with exactly the result of an uninterrupted run.
"""

import dataclasses
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from kvis.core.anatomy import spatial_node, stage_layers
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph, probe
from kvis.core.io import write_atomically
from kvis.core.models import weights_digest
from kvis.core.progress import progress_bar
from kvis.core.runner import compiled
from kvis.dataset.sources import image_source, skipped_note
from kvis.dataset.topk import TopK, admit, checked_strongest, merge

RARE = 0.01  # a channel active at fewer than 1% of the positions it saw is "rarely active"


@dataclass(frozen=True)
class LayerStats:
    """Per-channel statistics of one layer over the images scanned; they merge by addition.

    Attributes:
        positions: how many spatial positions each channel saw (images x h x w).
        total: float64 (C,) the sum of the activations.
        peak: float32 (C,) the largest activation (-inf before any image).
        active: int64 (C,) how many activations were above 0.
    """

    positions: int
    total: np.ndarray
    peak: np.ndarray
    active: np.ndarray

    @classmethod
    def empty(cls, channels):
        return cls(0, np.zeros(channels), np.full(channels, -np.inf, np.float32),
                   np.zeros(channels, np.int64))

    @property
    def mean(self):
        """float64 (C,) the mean activation."""
        return self.total / max(self.positions, 1)

    @property
    def fraction_active(self):
        """float64 (C,) the fraction of positions where the channel was above 0."""
        return self.active / max(self.positions, 1)

    @property
    def dead(self):
        """int (D,) channels never above 0."""
        return np.flatnonzero(self.active == 0)

    @property
    def rare(self):
        """int (R,) channels above 0 somewhere, but at fewer than `RARE` of the positions."""
        return np.flatnonzero((self.active > 0) & (self.fraction_active < RARE))

    def __add__(self, other):
        return LayerStats(self.positions + other.positions, self.total + other.total,
                          np.maximum(self.peak, other.peak), self.active + other.active)


@dataclass(frozen=True)
class Scan:
    """What a dataset scan found.

    Attributes:
        model: the model's name.
        layers: the layer paths scanned.
        count: activations kept per channel.
        top: `{path: kvis.dataset.topk.TopK}`, the `count` strongest activations of each channel.
        strongest: "images" (`count` distinct images, each at its strongest position) or
            "positions" (an image can repeat); see `kvis.dataset.topk.STRONGEST`.
        stats: `{path: LayerStats}`; empty where the scan gathered none (`statistics=False`).
        source: what was scanned (`ImageSource.description`).
        images: how many images were scanned (skipped files not counted).
        skipped: `[(image id, name, reason)]` files that could not be read.
        batches: batches done (a checkpoint resumes after them).
    """

    model: str
    layers: tuple
    count: int
    top: dict
    stats: dict
    source: str
    images: int = 0
    skipped: list = dataclasses.field(default_factory=list)
    batches: int = 0
    strongest: str = "images"

    def checked_stats(self, what):
        """`stats`, for `what` (e.g. "the statistics figure") to draw.

        Raises:
            KvisError: the scan gathered no statistics.
        """
        if not self.stats:
            raise KvisError(f"{what} needs the scan's statistics, and this scan gathered none "
                            "(statistics=False, or kvis topk --no-statistics): scan again "
                            "with them")
        return self.stats


def scan(model, data, layers=None, *, count=9, strongest="images", statistics=True,
         batch_size=32, checkpoint=None, every=50, resume=False, labels=None, strategy=None,
         progress=True):
    """Scan a dataset for the strongest activations of every channel, and its statistics.

    Args:
        model: a Keras model.
        data: anything `kvis.dataset.sources.image_source` takes: a folder, an IDX file, "demo", an
            array of model input (N, H, W, C), or a `tf.data.Dataset`.
        layers: spatial layer paths (default: `kvis.core.anatomy.stage_layers`, the last layer of
            each resolution).
        count: activations kept per channel (9 in Zeiler & Fergus, Fig. 2).
        strongest: "images": the `count` strongest images of each channel, each at its
            strongest position (as in the paper); "positions": the `count` strongest
            positions, where one image can hold several.
        statistics: also gather every channel's statistics (`LayerStats`: mean, peak,
            fraction active; dead and rare channels), two more reductions of every map a
            batch; False for the strongest activations alone (`Scan.stats` empty), a faster
            scan where the model does little work per activation (the demo model's scan: 70%
            to 86% of its forward passes' speed).
        batch_size: images per compiled pass (split over the replicas of `strategy`).
        checkpoint: a file to save the state to every `every` batches and when the scan is
            interrupted (atomically: an interrupted write leaves the previous state); None for
            no checkpoints.
        every: batches between checkpoints.
        resume: continue from `checkpoint` if it exists (it must be of the same model, layers,
            count, strongest, batch size and data).
        labels: labels of an array source (see `image_source`).
        strategy: a `tf.distribute.Strategy` (e.g. `MirroredStrategy()` over a machine's
            GPUs): each batch is split over its replicas and their states merged.
        progress: show progress (images per second).

    Returns:
        A `Scan`.

    Raises:
        KvisError: a non-spatial or unknown layer, count below 1, an unknown `strongest`, a
            checkpoint of another scan, a checkpoint that cannot be written, or what
            `image_source` raises.

    Warns:
        UserWarning: files that could not be read (skipped, counted and listed:
            `skipped_note`).

    Example:
        >>> found = kvis.scan(model, "photos/", ["block3_conv3", "block5_conv3"], count=9)
        >>> found.stats["block5_conv3"].dead
    """
    if every < 1:
        raise KvisError(f"checkpoints come every 1 batch or more; got {every}")
    source = image_source(data, labels=labels)
    state = empty_scan(model, scan_layers(model, layers), source, count=count,
                       strongest=strongest, statistics=statistics)
    total = _length(source)
    fingerprint = None if checkpoint is None else _fingerprint(model, state, batch_size)
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, fingerprint)
    run = batch_runner(model, state.layers, count=count, strongest=strongest,
                       statistics=statistics, strategy=strategy)
    with progress_bar(total, "scanning", unit="image", progress=progress) as bar:
        bar.update(min(state.images + len(state.skipped), total or 0))
        try:
            for batch in source.batches(model, batch_size=batch_size, start=state.batches):
                state = run(state, batch)
                bar.update(len(batch.x) + len(batch.skipped))
                if checkpoint is not None and state.batches % every == 0:
                    save_checkpoint(checkpoint, state, fingerprint, total=total)
        except KeyboardInterrupt:  # keep the batches done so far
            if checkpoint is not None:
                save_checkpoint(checkpoint, state, fingerprint, total=total)
            raise
    if checkpoint is not None:
        save_checkpoint(checkpoint, state, fingerprint, total=total)
    if state.skipped:
        warnings.warn(skipped_note(state.skipped, state.images + len(state.skipped)),
                      stacklevel=2)
    return state


def scan_layers(model, layers=None):
    """The checked paths of the layers to scan (default: `kvis.core.anatomy.stage_layers`).

    Raises:
        KvisError: an unknown or non-spatial layer, or none.
    """
    graph = model_graph(model)
    chosen = stage_layers(model) if layers is None else [layers] if isinstance(layers, str) \
        else layers
    if not chosen:
        raise KvisError("no layers given")
    return tuple(spatial_node(graph, layer, "the dataset scan").path for layer in chosen)


def empty_scan(model, paths, source, *, count, strongest="images", statistics=True):
    """The state of a scan of `count` activations per channel (and `statistics`) that has seen
    nothing.

    Raises:
        KvisError: count below 1, or an unknown `strongest`.
    """
    if count < 1:
        raise KvisError(f"count must be at least 1; got {count}")
    graph = model_graph(model)
    channels = {p: graph.nodes[p].output.shape[-1] for p in paths}
    return Scan(model.name, tuple(paths), count,
                {p: TopK.empty(channels[p], count) for p in paths},
                {p: LayerStats.empty(channels[p]) for p in paths} if statistics else {},
                source.description,
                strongest=checked_strongest(strongest))


def batch_runner(model, paths, *, count, strongest="images", statistics=True, strategy=None,
                 on_peaks=None):
    """`run(state, batch) -> state`: one batch through the compiled scan step (split over the
    replicas of `strategy`, if any), merged into the state. The one per-batch function of
    every way to scan: in process, on a `tf.distribute` strategy, in an Apache Beam worker.
    With `on_peaks`, the same pass also calls `on_peaks(ids int64 (n,), {path: float32 (n,
    C)})` for every part of a batch: each image's largest activation of each channel."""
    per_image = checked_strongest(strongest) == "images"
    peaks = on_peaks is not None
    step = compiled(model, ("scan", tuple(paths), count, strongest, statistics, peaks),
                    lambda jit: _scan_step(model, paths, count, per_image, statistics, peaks,
                                           jit))

    def run(state, batch):
        floors = tuple(tf.constant(state.top[path].values[:, -1]) for path in paths)
        if not len(batch.x):
            parts = []
        elif strategy is None:
            parts = [(batch.ids, step(tf.constant(batch.x), floors))]
        else:
            shards = np.array_split(np.arange(len(batch.x)), strategy.num_replicas_in_sync)
            values = strategy.experimental_distribute_values_from_function(
                lambda context: tf.constant(batch.x[shards[context.replica_id_in_sync_group]]))
            # A plain callable: each replica then calls the compiled step on its own shard.
            outputs = strategy.experimental_local_results(
                strategy.run(lambda images: step(images, floors), args=(values,)))
            parts = [(batch.ids[shard], output) for shard, output in zip(shards, outputs)
                     if len(shard)]
        if peaks:
            for ids, outputs in parts:
                on_peaks(ids, {path: outputs[path]["peaks"].numpy().T for path in paths})
        return _merge_batch(state, batch, parts)

    return run


def merge_scans(*scans):
    """The scan of the union of what each scan saw (disjoint image ids: shards of one source).

    Raises:
        KvisError: scans of different models, layers, counts or `strongest`, or scans with
            statistics and without.
    """
    first = scans[0]
    if len({(s.model, s.layers, s.count, s.strongest, bool(s.stats)) for s in scans}) != 1:
        raise KvisError("cannot merge scans of different models, layers, counts, strongest or "
                        "statistics")
    return dataclasses.replace(
        first,
        top={p: merge(*(s.top[p] for s in scans)) for p in first.layers},
        stats={p: sum((s.stats[p] for s in scans[1:]), first.stats[p]) for p in first.stats},
        images=sum(s.images for s in scans),
        skipped=sorted(sum((s.skipped for s in scans), []), key=lambda entry: entry[0]),
        batches=sum(s.batches for s in scans))


def save_checkpoint(path, state, fingerprint, *, total=None):
    """Write a scan's state atomically (a failed write leaves the previous file whole);
    `total` is the number of images of the whole scan, where known.

    Raises:
        KvisError: the file cannot be written (the message names it and the cause).
    """
    arrays = {"fingerprint": np.array(json.dumps(fingerprint)),
              "progress": np.array(json.dumps({"images": state.images, "batches": state.batches,
                                               "skipped": state.skipped, "total": total}))}
    for i, path_ in enumerate(state.layers):
        top = state.top[path_]
        arrays.update({f"{i}_values": top.values, f"{i}_images": top.images,
                       f"{i}_positions": top.positions})
        if state.stats:
            stats = state.stats[path_]
            arrays.update({f"{i}_positions_seen": stats.positions, f"{i}_total": stats.total,
                           f"{i}_peak": stats.peak, f"{i}_active": stats.active})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(buffer.getvalue()))


def load_checkpoint(path, fingerprint):
    """The scan state saved in `path`, refused unless it was saved by the same scan.

    Raises:
        KvisError: an unreadable file, or a checkpoint of another model, layers, count,
            strongest, batch size or data (named, with the checkpoint's value and this run's).
    """
    arrays = _checkpoint_arrays(path)
    found = {"statistics": True, **json.loads(str(arrays["fingerprint"]))}  # older: statistics
    if found != fingerprint:
        differ = [key for key in fingerprint if found.get(key) != fingerprint[key]]
        values = "; ".join(f"{key}: checkpoint {found.get(key)!r}, this run {fingerprint[key]!r}"
                           for key in differ)
        raise KvisError(f"checkpoint {path} is of another scan ({', '.join(differ)} differ: "
                        f"{values}); remove it or choose another file")
    progress = json.loads(str(arrays["progress"]))
    layers = tuple(fingerprint["layers"])
    return Scan(fingerprint["model"], layers, fingerprint["count"],
                {p: TopK(arrays[f"{i}_values"], arrays[f"{i}_images"], arrays[f"{i}_positions"])
                 for i, p in enumerate(layers)},
                {p: LayerStats(int(arrays[f"{i}_positions_seen"]), arrays[f"{i}_total"],
                               arrays[f"{i}_peak"], arrays[f"{i}_active"])
                 for i, p in enumerate(layers)} if fingerprint["statistics"] else {},
                fingerprint["source"], progress["images"],
                [tuple(entry) for entry in progress["skipped"]], progress["batches"],
                fingerprint["strongest"])


def checkpoint_progress(path):
    """`(images done, images in all)` of the scan a checkpoint holds (skipped files count as
    done); the total is None where the scan's length was unknown.

    Raises:
        KvisError: an unreadable file.
    """
    progress = json.loads(str(_checkpoint_arrays(path)["progress"]))
    return progress["images"] + len(progress["skipped"]), progress.get("total")


def _checkpoint_arrays(path):
    try:
        with np.load(path) as saved:
            return {name: saved[name] for name in saved.files}
    except (OSError, ValueError) as error:
        raise KvisError(f"cannot read checkpoint {path}: {error}") from None


def _fingerprint(model, state, batch_size):
    """What a checkpoint must match: the model (name, layers, weights), the scan, the data."""
    return {"model": state.model, "weights": weights_digest(model), "layers": list(state.layers),
            "count": state.count, "strongest": state.strongest,
            "statistics": bool(state.stats), "batch_size": batch_size, "source": state.source}


def _length(source):
    try:
        return len(source)
    except KvisError:
        return None


def _merge_batch(state, batch, parts):
    """The state after one batch, given `[(image ids, step outputs)]` of its parts."""
    top, stats = dict(state.top), dict(state.stats)
    for ids, outputs in parts:
        for path in state.layers:
            summary = {name: t.numpy() for name, t in outputs[path].items()}
            where, size = summary["where"], summary["size"]
            position = np.stack(np.divmod(where, size[1]), -1).astype(np.int32)
            top[path] = admit(top[path], TopK(summary["values"], ids[summary["images"]],
                                              np.where(where[..., None] < 0, -1, position)))
            if stats:
                stats[path] = stats[path] + LayerStats(
                    len(ids) * int(np.prod(size)), summary["total"].astype(np.float64),
                    summary["peak"], summary["active"])
    return dataclasses.replace(state, top=top, stats=stats, images=state.images + len(batch.x),
                               skipped=state.skipped + [tuple(s) for s in batch.skipped],
                               batches=state.batches + 1)


def _scan_step(model, paths, k, per_image, statistics, peaks, jit):
    outputs_of = probe(model, list(paths))
    graph = model_graph(model)
    floors = tuple(tf.TensorSpec((graph.nodes[path].output.shape[-1],)) for path in paths)

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])), floors],
                 jit_compile=jit)
    def step(images, floors):
        outputs = outputs_of(images, training=False)
        return {path: _batch_summary(outputs[path], k, per_image, floor, statistics, peaks)
                for path, floor in zip(paths, floors)}

    return step


def _batch_summary(maps, k, per_image, floor, statistics, with_peaks=False):
    """What one batch adds to a layer's state, by name: per channel, the batch's k strongest
    images (each at its strongest position) or positions ("values", "images" and flat
    positions "where" into the map of "size" (h, w), (C, k'), in the total order of
    `kvis.dataset.topk`); with `statistics`, the "total" (float32), the "peak" and the count of
    activations above 0 ("active", int64, exact: counted per image in float32, exact below
    2**24 positions); `with_peaks`: each image's maximum, "peaks" (C, N). `floor` (C,) is the
    state's k-th value per channel (what is below it can never enter the state); the search
    for distinct images uses it."""
    count, height, width, channels = (tf.shape(maps)[0], tf.shape(maps)[1],
                                      tf.shape(maps)[2], maps.shape[-1])
    peaks = tf.transpose(tf.reduce_max(maps, axis=(1, 2)))  # (C, N)
    flat = tf.reshape(maps, (count, height * width, channels))
    if per_image:
        values, image, where = _strongest_images(flat, peaks, k, floor)
    else:
        values, image, where = _strongest_positions(tf.transpose(flat, (2, 0, 1)), peaks, k)
    summary = {"values": values, "images": image, "where": where,
               "size": tf.shape(maps)[1:3]}
    if statistics:
        rows = tf.reshape(flat, (-1, channels))  # a product with ones: faster than reduce_sum
        summary.update(
            total=tf.matmul(tf.ones((1, tf.shape(rows)[0])), rows)[0],
            peak=tf.reduce_max(peaks, 1),
            active=tf.reduce_sum(tf.cast(tf.reduce_sum(tf.cast(maps > 0, tf.float32), (1, 2)),
                                         tf.int64), 0))
    if with_peaks:
        summary["peaks"] = peaks
    return summary


def _strongest_images(flat, peaks, k, floor):
    """Per channel (maps (N, h*w, C)), the k images with the largest maximum, each at the first
    position of its maximum (`top_k` puts the lower index first among equals): values, images
    and flat positions, (C, k). A position is looked for only where the value reaches `floor`
    (-1 elsewhere: that image cannot enter the state); late in a scan few do, so only their
    images' maps are transposed and searched."""
    values, image = tf.math.top_k(peaks, tf.minimum(k, tf.shape(peaks)[1]))
    pairs = tf.where(values >= floor[:, None])  # (M, 2): channel, rank
    chosen, row = tf.unique(tf.gather_nd(image, pairs))
    maps = tf.transpose(tf.gather(flat, chosen), (0, 2, 1))  # (images chosen, C, h*w)
    _, first = tf.math.top_k(tf.gather_nd(maps, tf.stack([tf.cast(row, tf.int64),
                                                          pairs[:, 0]], 1)), 1)
    return values, image, tf.tensor_scatter_nd_update(tf.fill(tf.shape(values), -1), pairs,
                                                      first[:, 0])


def _strongest_positions(per_channel, peaks, k):
    """Per channel (maps (C, N, h*w)), the k strongest positions: values, images and flat
    positions, (C, k').

    Found in two stages, exactly: an image holding one of a channel's k strongest activations
    is among the k images with the largest maximum of that channel (fewer than k images can
    have a larger one, each holding a stronger activation), so only those images' maps, in
    image order, are searched, not every position of the batch.
    """
    size = tf.shape(per_channel)[2]
    _, best = tf.math.top_k(peaks, tf.minimum(k, tf.shape(peaks)[1]))
    best = tf.sort(best, axis=1)  # image order, for the tie order of top_k below
    chosen = tf.reshape(tf.gather(per_channel, best, batch_dims=1), (tf.shape(peaks)[0], -1))
    values, index = tf.math.top_k(chosen, tf.minimum(k, tf.shape(chosen)[1]))
    return values, tf.gather(best, index // size, batch_dims=1), index % size
