"""Occlusion sensitivity (Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", ECCV 2014, Fig. 7): does the model find the object, or use its context?

A square of the mean pixel slides over the image. For every position, one pass records the
total activation of the layer's strongest feature map (strongest in the unoccluded image),
the score of the class and the most likely label: the paper's per-position grids. From the
score drops kvis also makes Captum's per-pixel sensitivity map (`captum.attr.Occlusion`):
each pixel gets the mean, over the occluder positions that cover it, of the score of the
unoccluded image minus the score with the occluder there.

The occluded images are made on the device from the occluder's corners, a batch at a time,
with a batch size set by a memory budget: memory does not grow with the number of positions.
Where it is less work, only the window of each layer an occluder changes is recomputed from the
unoccluded image's maps (`kvis.attribution.incremental`, after Krypton), with the same results.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from kvis.attribution.explanation import make_explanation, unit_maps
from kvis.attribution.incremental import AUTO_AT, drill, responses
from kvis.attribution.incremental_plan import floats_per_position, plan
from kvis.core.anatomy import class_scores, last_conv_layer, spatial_node
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images, one_image
from kvis.core.models import class_label, mean_pixel, preprocessing_for
from kvis.core.runner import rows_within, run_batches
from kvis.core.targets import make_target, score_pass
from kvis.plot.figures import WIDEST, NotebookFigure, fit_texts, show_image


@dataclass(frozen=True)
class Occlusion:
    """What the model says with a square occluder at each position, and the per-pixel map.

    Attributes:
        feature: float32 (R, C) total activation of `channel` at `layer`, per position.
        scores: float32 (R, C) the class's score (see `score`) per position.
        label: int64 (R, C) the class with the highest score, per position.
        sensitivity: float32 (H, W) per pixel, the mean over the positions whose square covers
            it of (unoccluded score - occluded score): positive where hiding the pixel lowers
            the score. Pixels no square covers (a stride larger than the size, or a border
            the grid does not reach) are 0.
        tops, lefts: int (R,) and (C,) the occluder's top and left edges in pixels.
        size: the occluder's side in pixels.
        fill: float32 (C,) the occluder's pixel value, in [0, 255].
        layer, channel: the feature map recorded (the strongest in the unoccluded image).
        class_index, class_label: the class whose score is recorded, and its name ("#c"
            where kvis does not know the names).
        score: "probability" (softmax) or "logit" (pre-softmax): what `scores` holds.
        unoccluded: `(feature, score, label)` for the image itself.
        label_names: {class index: name} for every class in `label` and `unoccluded`.
        pixels: uint8 (1, H, W, C) the image, for display.
        names: the image's name, in a one-element list.
        inference: "full" (one pass per position), "incremental" (Krypton's incremental
            inference, exact) or "approximate" (a threshold or drill-down).
        fallback: where incremental inference went back to full maps, and why ("" for full
            passes).
        error: with `check=True`, `(max, mean)` absolute difference of `sensitivity` from the
            full recomputation's, relative to its range (`measured_error`); else None.
    """

    feature: np.ndarray
    scores: np.ndarray
    label: np.ndarray
    sensitivity: np.ndarray
    tops: np.ndarray
    lefts: np.ndarray
    size: int
    fill: np.ndarray
    layer: str
    channel: int
    class_index: int
    class_label: str
    score: str
    unoccluded: tuple
    label_names: dict
    pixels: np.ndarray
    names: list
    inference: str = "full"
    fallback: str = ""
    error: tuple | None = None


def occlusion(model, images, *, size=32, stride=8, fill=None, layer=None, classes=None,
              score="probability", batch_size=32, memory_mb=1024, progress=True,
              incremental="auto", threshold=None, drill_down=None, check=False):
    """Slide a square occluder over one image and record the model's responses.

    Follows the paper (Z&F Fig. 7) for the per-position grids, which record the class's
    probability by default; `score="logit"` records the pre-softmax logit instead. The
    per-pixel `sensitivity` map follows Captum's `Occlusion` (sliding window, baseline
    `fill`): its sign is the score drop, in the units of `score`.

    Args:
        model: a Keras classifier with output (N, classes).
        images: one image: a `kvis.ModelImage` (`kvis.load_image`), a one-element list of
            them, or a preprocessed float32 array (1, H, W, C).
        size: the occluder's side in pixels, at least 1 and at most the image's side.
        stride: pixels between occluder positions, at least 1.
        fill: the occluder's pixel value in [0, 255], a number or one per channel (RGB);
            default `kvis.core.models.mean_pixel(model)`, the training data's mean pixel. It
            goes through the model's preprocessing (`kvis.preprocessing_for(model)`).
        layer: the spatial layer whose strongest feature map is recorded (default: the last
            conv layer).
        classes: the class whose score is recorded (index or name); default the top
            prediction for the unoccluded image.
        score: "probability" (default, as in the paper) or "logit".
        batch_size: occluded images per pass, at most; fewer where `memory_mb` needs it.
        memory_mb: budget for one batch of occluded images and all their activations.
        progress: show progress.
        incremental: True: recompute only the window of each layer the occluder changes
            (`kvis.attribution.incremental`; the same results within float32 round-off);
            False: one full pass per position; "auto" (default): incremental where it plans
            at most `AUTO_AT` of the full passes' work.
        threshold: None (exact), or a fraction in (0, 1]: approximate, no window side grows
            past that fraction of its map's side (Krypton's projective-field threshold).
        drill_down: None (every position), or a fraction in (0, 1]: approximate, every other
            position in each direction first, then that fraction of the others, next to the
            largest score changes; the rest copy their coarse neighbour.
        check: also run the full recomputation and set the result's `error`.

    Returns:
        An `Occlusion`.

    Raises:
        KvisError: not one image, an occluder size below 1 or larger than the image, a
            stride below 1, a fill outside [0, 255], an unknown score, a layer that is not
            spatial, an unknown class, a model whose preprocessing kvis cannot tell, an
            `incremental` other than True, False or "auto", a threshold or drill-down
            outside (0, 1], or a threshold with `incremental=False`.

    Example:
        >>> boot = kvis.load_image("boot.png", model)
        >>> result = kvis.occlusion(model, boot, size=6, stride=2)
        >>> kvis.plot_occlusion(result)
    """
    batch = one_image(model, images, "occlusion maps")
    height, width, channels = batch.x.shape[1:]
    if size < 1:
        raise KvisError(f"occluder size must be at least 1; got {size}")
    if size > min(height, width):
        raise KvisError(f"occluder size {size} does not fit the {height}x{width} image")
    if stride < 1:
        raise KvisError(f"the occluder's stride must be at least 1; got {stride}")
    target = make_target(model, 1, classes=classes, score=score, purpose="occlusion")
    path = spatial_node(model_graph(model), layer or last_conv_layer(model), "occlusion").path
    fill = _fill(model, fill, channels)
    tops = np.arange(0, height - size + 1, stride)
    lefts = np.arange(0, width - size + 1, stride)
    grid = (len(tops), len(lefts))
    corners = np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)
    value = preprocessing_for(model)(fill[None, None, None])[0, 0, 0].astype(np.float32)
    needed = (path, class_scores(model_graph(model), score)[0])
    way = _inference(model, corners, size, needed, incremental, threshold, drill_down)
    budget = dict(batch_size=batch_size, memory_mb=memory_mb, progress=progress)

    def measure(chosen):
        """Row 0: the unoccluded image; then one row per corner of `chosen`."""
        if way.plan is None:
            return _full_responses(model, batch.x, chosen, size, value, path, target, **budget)
        found = way.plan if chosen is corners else plan(
            model, np.concatenate([[[0, 0]], chosen]), size, needed, threshold=threshold)
        return _incremental_responses(model, batch.x, chosen, size, value, needed[0], score,
                                      found, **budget)

    if drill_down is None:
        features, scores = measure(corners)
    else:
        features, scores = drill(grid, corners, measure, drill_down, target)
    channel = int(np.argmax(features[0]))
    cls = int(np.argmax(scores[0])) if target.classes is None else int(target.classes[0])
    labels = scores[1:].argmax(axis=1).reshape(grid).astype(np.int64)
    top_label = int(np.argmax(scores[0]))
    grid_scores = scores[1:, cls].reshape(grid)
    result = Occlusion(
        feature=features[1:, channel].reshape(grid), scores=grid_scores, label=labels,
        sensitivity=sensitivity_map(scores[0, cls] - grid_scores, tops, lefts, size,
                                    (height, width)),
        tops=tops, lefts=lefts, size=int(size), fill=fill, layer=path, channel=channel,
        class_index=cls, class_label=class_label(model, cls), score=score,
        unoccluded=(float(features[0, channel]), float(scores[0, cls]), top_label),
        label_names={int(c): class_label(model, int(c))
                     for c in sorted({*np.unique(labels).tolist(), top_label})},
        pixels=batch.pixels, names=list(batch.names), inference=way.name, fallback=way.fallback)
    if not check:
        return result
    exact = occlusion(model, batch.x, size=size, stride=stride, fill=fill, layer=path,
                      classes=cls, score=score, incremental=False, **budget)
    return dataclasses.replace(result, error=measured_error(result.sensitivity,
                                                            exact.sensitivity))


def occlusion_map(model, images, *, classes=None, score="logit", target=None, size=None,
                  stride=None, fill=None, batch_size=32, memory_mb=1024, progress=True):
    """Occlusion as an attention method: Captum's per-pixel sensitivity of each image.

    Runs `occlusion` on each image and keeps its `sensitivity` map (the mean score drop over
    the occluder positions covering each pixel), so that occlusion stands beside the other
    methods in `kvis.attention`, `plot_attention` and the sanity check. For the paper's
    per-position grids (Z&F Fig. 7) call `kvis.occlusion`.

    Args:
        model, images, classes, score, batch_size, memory_mb, progress: as for
            `kvis.saliency`; `score` defaults to the logit like every attention method
            (`kvis.occlusion` defaults to the paper's probability).
        target: not supported: occlusion explains a class.
        size: the occluder's side in pixels (default: a seventh of the image's shorter side,
            32 at 224 px).
        stride: pixels between positions (default: a quarter of `size`).
        fill: as for `kvis.occlusion`.

    Returns:
        An `Explanation` with method "occlusion": `values` (N, H, W, C) the sensitivity,
        the same in every channel; `maps` its positive part divided by its maximum.

    Raises:
        KvisError: a target, and what `kvis.occlusion` raises.
    """
    if target is not None:
        raise KvisError("occlusion explains a class: give classes=, not a target")
    batch = as_images(model, images)
    size = size or max(1, round(min(batch.x.shape[1:3]) / 7))
    stride = stride or max(1, size // 4)
    picked = make_target(model, len(batch.x), classes=classes, score=score,
                         purpose="occlusion").classes
    found = [occlusion(model, batch.x[n:n + 1], size=size, stride=stride, fill=fill,
                       classes=None if picked is None else int(picked[n]), score=score,
                       batch_size=batch_size, memory_mb=memory_mb, progress=progress)
             for n in range(len(batch.x))]
    sensitivity = np.stack([result.sensitivity for result in found])
    values = np.repeat(sensitivity[..., None], batch.x.shape[-1], axis=-1)
    outputs = {"classes": [result.class_index for result in found],
               "scores": [result.unoccluded[1] for result in found]}
    return make_explanation(model, batch, "occlusion",
                            make_target(model, len(found), score=score, purpose="occlusion"),
                            outputs, maps=unit_maps(np.maximum(sensitivity, 0)), values=values)


def sensitivity_map(drops, tops, lefts, size, shape):
    """Captum's occlusion attribution from the score drop at each occluder position.

    Args:
        drops: (R, C) unoccluded score minus the score with the square at (tops[r], lefts[c]).
        tops, lefts: int (R,) and (C,) the squares' top and left edges.
        size: the squares' side.
        shape: the image's (height, width).

    Returns:
        float32 (H, W): per pixel, the mean drop over the squares that cover it; 0 where
        none does.
    """
    height, width = shape
    total = np.zeros((height + 1, width + 1))
    count = np.zeros((height + 1, width + 1))
    top, left = np.meshgrid(tops, lefts, indexing="ij")
    # Each square adds its drop to a rectangle: four corners of a 2-D difference array.
    for rows, cols, sign in ((top, left, 1), (top, left + size, -1), (top + size, left, -1),
                             (top + size, left + size, 1)):
        np.add.at(total, (rows.ravel(), cols.ravel()), sign * np.ravel(drops))
        np.add.at(count, (rows.ravel(), cols.ravel()), sign)
    total = total.cumsum(0).cumsum(1)[:height, :width]
    count = np.rint(count.cumsum(0).cumsum(1)[:height, :width])
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def plot_occlusion(result, *, fig=None, title=None):
    """The paper's Fig. 7 and the per-pixel map: the image with the occluder, the feature
    map's and the class score's grids over it, the sensitivity map, and the grid of the most
    likely label with a legend of class names.

    Args:
        result: an `Occlusion`.
        fig: a Figure or SubFigure to draw in (default: a new Figure).
        title: the figure's title (default: the image, the class and the score).

    Returns:
        The Figure (or SubFigure) drawn in, two rows of three panels; each grid value sits at
        the centre of its occluder position. Axes: image, feature, score, sensitivity, label,
        and the legend of the labels.
    """
    if fig is None:
        fig = NotebookFigure(figsize=(WIDEST, 6.4), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    show_image(axes[0], result.pixels[0])
    axes[0].add_patch(_square(result.tops[0], result.lefts[0], result.size, result.fill))
    axes[0].set_title(f"image, occluder {result.size}x{result.size}", fontsize=9)
    extent = _extent(result)
    score_name = _score_name(result.score, result.class_label)
    for ax, values, label in (
            (axes[1], result.feature, f"{result.layer} #{result.channel}: total activation"),
            (axes[2], result.scores, score_name)):
        show_image(ax, result.pixels[0])
        shown = ax.imshow(values, extent=extent, alpha=0.6, cmap="jet", interpolation="nearest")
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_title(label, fontsize=9)
    reach = float(np.abs(result.sensitivity).max()) or 1.0
    show_image(axes[3], result.pixels[0])
    shown = axes[3].imshow(result.sensitivity, alpha=0.7, cmap="coolwarm", vmin=-reach,
                           vmax=reach, interpolation="nearest")
    fig.colorbar(shown, ax=axes[3], shrink=0.8)
    axes[3].set_title(f"sensitivity: drop of {score_name}", fontsize=9)
    labels = np.unique(result.label)
    colours = np.searchsorted(labels, result.label)
    axes[4].imshow(colours, extent=extent, cmap="tab20", vmin=0, vmax=19,
                   interpolation="nearest")
    axes[4].set_title("most likely label", fontsize=9)
    handles = [axes[4].scatter([], [], color=axes[4].images[0].cmap(i % 20),
                               label=result.label_names[int(c)]) for i, c in enumerate(labels)]
    axes[5].legend(handles=handles, fontsize=8, loc="upper left", title="label",
                   title_fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title or f"{result.names[0]}: occlusion sensitivity of {result.class_label} "
                          "(Zeiler & Fergus 2014, Fig. 7)")
    return fit_texts(fig)


def measured_error(approximate, exact):
    """`(max, mean)` absolute difference of two sensitivity maps, relative to the exact map's
    range (its maximum minus its minimum; 1 where that is 0)."""
    span = float(np.ptp(exact)) or 1.0
    difference = np.abs(np.asarray(approximate, np.float64) - exact)
    return float(difference.max()) / span, float(difference.mean()) / span


@dataclass(frozen=True)
class _Way:
    """How the occluded images are computed: "full", "incremental" or "approximate"; with
    `plan` None, by full passes."""

    name: str
    plan: object = None
    fallback: str = ""


def _inference(model, corners, size, needed, incremental, threshold, drill_down):
    """How to compute, from the options; "auto" is incremental where its plan does at most
    `AUTO_AT` of a full pass's work."""
    if incremental not in (True, False, "auto"):
        raise KvisError(f"incremental must be True, False or 'auto'; got {incremental!r}")
    for name, fraction in (("threshold", threshold), ("drill_down", drill_down)):
        if fraction is not None and not 0 < fraction <= 1:
            raise KvisError(f"{name} must be a fraction in (0, 1] or None; got {fraction}")
    if threshold is not None and incremental is False:
        raise KvisError("threshold= approximates incremental inference: not with "
                        "incremental=False")
    approximate = threshold is not None or drill_down is not None
    name = "approximate" if approximate else "incremental"
    if incremental is False:
        return _Way("approximate" if approximate else "full")
    found = plan(model, np.concatenate([[[0, 0]], corners]), size, needed, threshold=threshold)
    if incremental == "auto" and threshold is None and found.work > AUTO_AT:
        return _Way("approximate" if approximate else "full")
    return _Way(name, found, found.fallback)


def _full_responses(model, x, corners, size, value, path, target, *, batch_size, memory_mb,
                    progress):
    """Features and every score of the unoccluded image (row 0) and of the image occluded at
    each corner: one full pass each, on images made a batch at a time."""
    height, width = x.shape[1:3]
    # The first "position" covers nothing: the unoccluded image rides in the first batch.
    corners = np.concatenate([[[-size, -size]], corners])
    rows_of, cols_of = np.arange(height)[None, :, None], np.arange(width)[None, None, :]

    def occluded(rows):
        top, left = corners[rows, 0, None, None], corners[rows, 1, None, None]
        inside = (rows_of >= top) & (rows_of < top + size) & (cols_of >= left) \
            & (cols_of < left + size)
        return np.where(inside[..., None], value, x[0]), *target.rows(np.zeros_like(top[:, 0, 0]))

    outputs = run_batches(
        score_pass(model, target, layers=[path], layer_sums=True, every_score=True), occluded,
        count=len(corners), batch_size=rows_within(model, memory_mb, batch_size=batch_size),
        desc="occlusion", progress=progress)
    return outputs[path], outputs["every_score"]


def _incremental_responses(model, x, corners, size, value, path, score, found, *,
                           batch_size, memory_mb, progress):
    """As `_full_responses`, by incremental inference with the plan `found` (of row 0 at the
    corner (0, 0), then the corners): row 0 "occludes" the image with its own pixels, so it
    is the unoccluded image computed the same way."""
    rows_within(model, memory_mb, batch_size=batch_size)  # checks the budget
    corners = np.concatenate([[[0, 0]], corners])
    own = x[:, :size, :size]

    def patches(rows):
        made = np.broadcast_to(value, (len(corners[rows]), size, size, x.shape[-1])).copy()
        if rows.start == 0:
            made[0] = own[0]
        return made

    rows = int(memory_mb * 2 ** 20 // (4 * floats_per_position(model, found)))
    return responses(model, x, patches, found, layer=path, score=score,
                     batch_size=max(1, min(rows, batch_size)), progress=progress)


def _fill(model, fill, channels):
    """The occluder's pixel value as float32 (C,), checked to lie in [0, 255]."""
    if fill is None:
        return np.broadcast_to(np.asarray(mean_pixel(model), np.float32), (channels,)).copy()
    values = np.asarray(fill, np.float32)
    if values.ndim > 1 or values.size not in (1, channels):
        raise KvisError(f"occluder fill must be one pixel value or {channels} (one per "
                        f"channel); got {np.asarray(fill).tolist()}")
    if not np.all((values >= 0) & (values <= 255)):
        raise KvisError(f"occluder fill must be pixel values in [0, 255]; got "
                        f"{np.asarray(fill).tolist()}")
    return np.broadcast_to(values, (channels,)).copy()


def _score_name(score, label):
    return f"p({label})" if score == "probability" else f"logit({label})"


def _extent(result):
    """imshow extent placing each value at its occluder's centre, in pixel coordinates."""
    half = result.size / 2 - 0.5
    step_y = result.tops[1] - result.tops[0] if len(result.tops) > 1 else result.size
    step_x = result.lefts[1] - result.lefts[0] if len(result.lefts) > 1 else result.size
    return (result.lefts[0] + half - step_x / 2, result.lefts[-1] + half + step_x / 2,
            result.tops[-1] + half + step_y / 2, result.tops[0] + half - step_y / 2)


def _square(top, left, size, fill):
    from matplotlib.patches import Rectangle

    colour = np.broadcast_to(np.asarray(fill, np.float64) / 255, (3,))
    return Rectangle((left - 0.5, top - 0.5), size, size, fill=True, color=tuple(colour),
                     alpha=0.9)
