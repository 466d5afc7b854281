"""Network dissection (Bau, Zhou, Khosla, Oliva & Torralba, "Network Dissection: Quantifying
Interpretability of Deep Visual Representations", CVPR 2017): which units of a layer detect
which labelled concepts, measured by the overlap of their top activations with pixel masks.

Two passes over a concept dataset (images with per-pixel concept labels):
1. Each unit's threshold T_k: the top-`quantile` level of its activations over every position
   of every image, exactly the m-th largest value with m = ceil(quantile * N * h * w), kept
   with a streaming top-m per unit (memory: units x m, never the whole dataset).
2. Each unit's map, upsampled bilinearly to the mask size, is cut at T_k: M_k = map > T_k.
   For every concept c with mask L_c = (label == c), |M_k & L_c| and |M_k | L_c| are summed
   over the dataset; IoU_k,c = intersection / union. A unit's best concept is its highest IoU.

The concept dataset, its format and its reading: `kvis.dataset.concepts`.
"""

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.core.anatomy import last_conv_layer, spatial_node
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph, probe
from kvis.core.models import preprocessing_for
from kvis.core.progress import progress_bar
from kvis.core.runner import compiled, run_batches
from kvis.dataset.concepts import ConceptDataset, concept_dataset, read_images, read_mask
from kvis.plot.figures import WIDEST, NotebookFigure, fit_texts

DETECTOR_IOU = 0.04  # the paper's cut: a unit with a best IoU above it detects its concept
_CHUNK_BATCHES = 8   # batches read from disk at a time: memory stays flat in the dataset size


@dataclass(frozen=True)
class Dissection:
    """Which units detect which concepts: thresholds, IoUs and each unit's best concept.

    Units are the channels of the dissected layers, layer after layer (U units in all);
    concepts are those of the dataset (K).

    Attributes:
        layers: the dissected layer paths.
        unit_layers: int64 (U,) the index in `layers` of each unit's layer.
        channels: int64 (U,) each unit's channel in its layer.
        thresholds: float32 (U,) T_k, the top-`quantile` level of each unit's activations.
        intersection: int64 (U, K) |M_k & L_c| in pixels, summed over the dataset.
        union: int64 (U, K) |M_k | L_c| in pixels, summed over the dataset.
        iou: float64 (U, K) in [0, 1], intersection / union (0 where the union is empty).
        best: int64 (U,) the index in `concepts` of each unit's best concept; -1 for a unit
            that overlaps no concept (all its IoUs are 0).
        best_iou: float64 (U,) that concept's IoU (0 where `best` is -1).
        best_concepts: tuple (U,) its name (None where `best` is -1).
        concepts: the concept names (K,).
        concept_pixels: int64 (K,) the pixels of each concept over the dataset.
        quantile: the top fraction of activations that defines the thresholds.
        images: the number of images dissected.
        model: the model's name.
    """

    layers: tuple
    unit_layers: np.ndarray
    channels: np.ndarray
    thresholds: np.ndarray
    intersection: np.ndarray
    union: np.ndarray
    iou: np.ndarray
    best: np.ndarray
    best_iou: np.ndarray
    best_concepts: tuple
    concepts: tuple
    concept_pixels: np.ndarray
    quantile: float
    images: int
    model: str

    @property
    def unit_names(self):
        """'layer #channel' for every unit."""
        return [f"{self.layers[i]} #{c}" for i, c in zip(self.unit_layers, self.channels)]

    def detectors(self, cut=DETECTOR_IOU):
        """{concept: number of units whose best concept it is with an IoU above `cut`}, most
        units first (the paper counts detectors with cut 0.04)."""
        found = self.best[self.best_iou > cut]
        counts = {self.concepts[c]: int(n) for c, n in zip(*np.unique(found, return_counts=True))}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def as_dict(self, cut=DETECTOR_IOU):
        """The result as JSON-ready data: settings, per-unit best concepts, detector counts."""
        return {
            "model": self.model, "layers": list(self.layers), "quantile": self.quantile,
            "images": self.images, "concepts": list(self.concepts), "detector_iou": cut,
            "detectors": self.detectors(cut),
            "units": [{"layer": self.layers[i], "channel": int(c), "threshold": float(t),
                       "concept": name, "iou": float(iou)}
                      for i, c, t, name, iou in zip(self.unit_layers, self.channels,
                                                    self.thresholds, self.best_concepts,
                                                    self.best_iou)]}

    def to_json(self, cut=DETECTOR_IOU):
        """`as_dict` as a JSON string."""
        return json.dumps(self.as_dict(cut), indent=1)


def dissect(model, data, layers=None, *, quantile=0.005, batch_size=32, progress=True):
    """Network dissection: each unit's best-matching concept and its IoU (Bau et al. 2017).

    Follows the paper: thresholds at the top `quantile` (0.005) of each unit's activations over
    the dataset, activation maps upsampled bilinearly (half-pixel centres, like PIL and
    `tf.image.resize`) to the mask size, IoU summed over the dataset. The paper's Broden masks
    hold several labels per pixel; here a pixel has one label.

    Args:
        model: a Keras model; images are prepared with `kvis.preprocessing_for(model)`.
        data: a `ConceptDataset` or the path of a concept dataset folder.
        layers: a layer path or a list of them, each with spatial output (N, h, w, C);
            default: the last conv layer (`kvis.last_conv_layer`).
        quantile: the top fraction of activations a unit "fires" on, in (0, 1).
        batch_size: images per model call. The second pass holds the upsampled maps of one
            layer for a batch: about batch_size x mask pixels x units x 4 bytes (32 images of
            224x224 for 512 units: 3.3 GB); lower it for large layers.
        progress: show the progress of the two passes (images/s).

    Returns:
        A `Dissection`.

    Raises:
        KvisError: a layer that is not spatial, a quantile outside (0, 1), a batch size below
            1, an image whose size differs from its mask's, a dataset problem (see
            `concept_dataset`), a model whose preprocessing kvis cannot tell.

    Example:
        >>> result = kvis.dissect(model, "concepts/", layers=["block5_conv3"])
        >>> result.detectors()                      # {"sky": 3, "grass": 2, ...}
        >>> kvis.plot_dissection(result)
    """
    if not 0 < quantile < 1:
        raise KvisError(f"quantile must be in (0, 1); got {quantile}")
    if batch_size < 1:
        raise KvisError(f"batch_size must be at least 1; got {batch_size}")
    data = data if isinstance(data, ConceptDataset) else concept_dataset(data)
    graph = model_graph(model)
    layers = [last_conv_layer(model)] if layers is None else (
        [layers] if isinstance(layers, str) else list(layers))
    paths = tuple(dict.fromkeys(spatial_node(graph, layer, "network dissection").path
                                for layer in layers))
    preprocess = preprocessing_for(model)
    groups = _size_groups(data.sizes)
    thresholds = _thresholds(model, data, paths, groups, quantile, preprocess, batch_size,
                             progress)
    inter, units, pixels = _overlaps(model, data, paths, groups, thresholds, preprocess,
                                     batch_size, progress)
    inter = np.concatenate([inter[p] for p in paths], axis=0)
    unit_pixels = np.concatenate([units[p] for p in paths])
    union = unit_pixels[:, None] + pixels[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    best = np.where(iou.max(axis=1) > 0, iou.argmax(axis=1), -1)
    unit_layers = np.concatenate([np.full(len(thresholds[p]), i) for i, p in enumerate(paths)])
    return Dissection(
        paths, unit_layers.astype(np.int64),
        np.concatenate([np.arange(len(thresholds[p])) for p in paths]).astype(np.int64),
        np.concatenate([thresholds[p] for p in paths]).astype(np.float32), inter, union, iou,
        best.astype(np.int64), iou.max(axis=1),
        tuple(data.concepts[c] if c >= 0 else None for c in best), data.concepts, pixels,
        float(quantile),
        len(data), model.name)


def plot_dissection(result, *, fig=None, title=None, cut=DETECTOR_IOU, count=40):
    """Units sorted by their best IoU, bars coloured by concept, and the detectors per concept.

    Args:
        result: a `Dissection`.
        fig: a Figure or SubFigure to draw in; by default a new Figure.
        title: the figure's title; default: the model, layers, quantile and image count.
        cut: the IoU above which a unit counts as a detector (dashed line; right panel).
        count: how many of the best units to show.

    Returns:
        The Figure (or SubFigure) drawn in.
    """
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    order = np.argsort(-result.best_iou, kind="stable")[:count]
    fig = fig or NotebookFigure(figsize=(min(WIDEST, max(6.0, 0.25 * len(order) + 4.0)), 4.2),
                                layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(3, 1))
    palette = colormaps["tab10" if len(result.concepts) <= 10 else "tab20"]
    colour = {c: palette(i % palette.N) for i, c in enumerate(result.concepts)}
    colour[None] = "0.6"
    names = result.unit_names
    left.bar(range(len(order)), result.best_iou[order],
             color=[colour[result.best_concepts[u]] for u in order])
    left.set_xticks(range(len(order)), [names[u] for u in order], rotation=90, fontsize=8)
    left.axhline(cut, color="0.3", linestyle="--", linewidth=0.8)
    left.set_ylabel("IoU with the best concept")
    left.set_ylim(0, 1.3 * max(float(result.best_iou.max()), cut))
    left.set_title(f"{len(order)} of {len(names)} units by best IoU", fontsize=9)
    shown = list(dict.fromkeys(result.best_concepts[u] for u in order))
    left.legend(handles=[_patch(colour[c], c or "none") for c in shown[:20]], fontsize=8,
                ncols=2, loc="upper right", title="concept", title_fontsize=8)
    counts = result.detectors(cut)
    right.barh(range(len(counts)), list(counts.values()), color=[colour[c] for c in counts])
    right.set_yticks(range(len(counts)), list(counts), fontsize=8)
    right.invert_yaxis()
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("units")
    right.set_title(f"detectors, IoU > {cut:g}", fontsize=9)
    if not counts:
        right.text(0.5, 0.5, "none", ha="center", va="center", transform=right.transAxes)
    fig.suptitle(title or f"Network dissection of {result.model}: {', '.join(result.layers)} "
                          f"(top {result.quantile:g}, {result.images} images)")
    return fit_texts(fig)


def _thresholds(model, data, paths, groups, quantile, preprocess, batch_size, progress):
    """Pass 1: per layer, float32 (C,) the m-th largest activation of each unit."""
    positions = {p: 0 for p in paths}
    for size, ids in groups.items():
        shapes = probe(model, paths).compute_output_shape((1, *_input_shape(model, size)))
        for p in paths:
            positions[p] += len(ids) * shapes[p][1] * shapes[p][2]
    keep = {p: math.ceil(quantile * positions[p]) for p in paths}
    top = {}
    notes = {"converted": 0, "resized": 0}
    with progress_bar(len(data), "dissection: thresholds", unit="image",
                      progress=progress) as bar:
        for size, ids in groups.items():
            shape = _input_shape(model, size)
            run = compiled(model, ("dissection thresholds", paths, shape),
                           lambda jit, shape=shape: _top_step(model, paths, shape, jit))
            limit = {p: tf.constant(keep[p], tf.int32) for p in paths}
            for chunk in _chunks(ids, batch_size):
                x = read_images(data, chunk, shape=shape, preprocess=preprocess, notes=notes)
                found = run_batches(lambda x, run=run, limit=limit: run(x, limit), (x,),
                                    batch_size=batch_size, progress=False)
                for p in paths:
                    values = np.moveaxis(found[p], 1, 0).reshape(found[p].shape[1], -1)
                    if p in top:
                        values = np.concatenate([top[p], values], axis=1)
                    top[p] = tf.math.top_k(values, k=min(keep[p], values.shape[1])).values.numpy()
                bar.update(len(chunk))
    _warn_about(notes, model, len(data))
    return {p: top[p][:, keep[p] - 1] for p in paths}


def _overlaps(model, data, paths, groups, thresholds, preprocess, batch_size, progress):
    """Pass 2: per layer int64 (C, K) intersections and (C,) unit pixels; (K,) concept pixels."""
    concepts = len(data.concepts)
    inter = {p: 0 for p in paths}
    units = {p: 0 for p in paths}
    pixels = 0
    limits = tuple(tf.constant(thresholds[p], tf.float32) for p in paths)
    notes = {"converted": 0, "resized": 0}  # warned about in the first pass
    with progress_bar(len(data), "dissection: IoU", unit="image",
                      progress=progress) as bar:
        for size, ids in groups.items():
            shape = _input_shape(model, size)
            run = compiled(model, ("dissection overlaps", paths, shape, size, concepts),
                           lambda jit, shape=shape, size=size: _overlap_step(
                               model, paths, shape, size, concepts, jit))
            for chunk in _chunks(ids, batch_size):
                x = read_images(data, chunk, shape=shape, preprocess=preprocess, notes=notes)
                masks = np.stack([read_mask(data.masks[i], concepts) for i in chunk])
                found = run_batches(lambda x, m, run=run: run(x, m, limits), (x, masks),
                                    batch_size=batch_size, progress=False)
                for p in paths:
                    inter[p] = inter[p] + found["intersection"][p].astype(np.int64).sum(0).T
                    units[p] = units[p] + found["unit pixels"][p].astype(np.int64).sum(0)
                pixels = pixels + found["concept pixels"].astype(np.int64).sum(0)
                bar.update(len(chunk))
    return inter, units, pixels


def _top_step(model, paths, shape, jit):
    sub = probe(model, paths)

    @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32),
                                  {p: tf.TensorSpec((), tf.int32) for p in paths}],
                 jit_compile=jit)
    def run(x, keep):
        outputs = sub(x, training=False)
        found = {}
        for p in paths:
            maps = tf.cast(outputs[p], tf.float32)
            flat = tf.transpose(tf.reshape(maps, (tf.shape(maps)[0], -1, maps.shape[-1])),
                                (0, 2, 1))
            # Per image, its top min(m, h*w) values per unit: the dataset's top m is among them.
            found[p] = tf.math.top_k(flat, k=tf.minimum(keep[p], tf.shape(flat)[2])).values
        return found

    return run


def _overlap_step(model, paths, shape, size, concepts, jit):
    sub = probe(model, paths)
    labels = concepts + 1

    @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32),
                                  tf.TensorSpec((None, *size), tf.uint8),
                                  tuple(tf.TensorSpec((None,), tf.float32) for _ in paths)],
                 jit_compile=jit)
    def run(x, masks, thresholds):
        outputs = sub(x, training=False)
        count = tf.shape(masks)[0]
        # One segment per (image, label): a segment sum counts each unit's pixels per label.
        segments = tf.reshape(tf.cast(masks, tf.int32) + labels * tf.range(count)[:, None, None],
                              (-1,))
        ones = tf.ones_like(segments, tf.float32)
        pixels = tf.reshape(tf.math.unsorted_segment_sum(ones, segments, count * labels),
                            (count, labels))[:, 1:]
        inter, units = {}, {}
        for p, threshold in zip(paths, thresholds):
            maps = tf.image.resize(tf.cast(outputs[p], tf.float32), size, method="bilinear")
            on = tf.cast(maps > threshold, tf.float32)
            channels = on.shape[-1]
            per_label = tf.math.unsorted_segment_sum(tf.reshape(on, (-1, channels)), segments,
                                                     count * labels)
            inter[p] = tf.reshape(per_label, (count, labels, channels))[:, 1:]
            units[p] = tf.reduce_sum(on, axis=(1, 2))
        return {"intersection": inter, "unit pixels": units, "concept pixels": pixels}

    return run


def _size_groups(sizes):
    groups = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    return groups


def _input_shape(model, size):
    """The model input shape for images of `size`: the model's own where it fixes one."""
    height, width, channels = model.input_shape[1:4]
    return (height or size[0], width or size[1], channels)


def _chunks(ids, batch_size):
    step = batch_size * _CHUNK_BATCHES
    return [ids[i:i + step] for i in range(0, len(ids), step)]


def _warn_about(notes, model, count):
    channels = model.input_shape[3]
    if notes["converted"]:
        warnings.warn(f"{notes['converted']} of {count} concept images converted to "
                      f"{'grayscale' if channels == 1 else 'RGB'} for model {model.name!r}",
                      stacklevel=4)
    if notes["resized"]:
        height, width = model.input_shape[1:3]
        warnings.warn(f"{notes['resized']} of {count} concept images resized to {height}x{width} "
                      f"(height x width) for model {model.name!r}; the masks keep their size",
                      stacklevel=4)


def _patch(colour, label):
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)
