"""Correspondence analysis (Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", ECCV 2014, Section 4, Table 1): does the model relate the same object part across
images?

The same part (the left eye of a dog, say) is occluded with the mean pixel in each of N
images of one kind. At layer l, eps_i = x_i - x~_i is the change the occlusion makes to image
i's flattened layer output, and Delta_l = sum over i != j of H(sign(eps_i), sign(eps_j)),
with H the Hamming distance. A low Delta means the occlusion changes the representation the
same way in every image: the model ties the part to something consistent. The same is
measured with boxes of the same sizes at random positions, the baseline.

kvis uses the normalized Hamming distance (the fraction of entries whose signs differ) so
that layers of different widths compare; sign(0) = 0 is a sign of its own (a unit the
occluder does not reach agrees with itself).
"""

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvis.core.anatomy import last_conv_layer, penultimate_layer
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images
from kvis.core.models import mean_pixel, preprocessing_for
from kvis.core.runner import rows_within, run_batches
from kvis.core.targets import score_pass
from kvis.plot.figures import WIDEST, NotebookFigure, fit_axes


@dataclass(frozen=True)
class Correspondence:
    """How consistently occluding one part changes each layer, against random boxes.

    Attributes:
        layers: the L layer paths.
        delta: float32 (L,) Delta_l, the normalized Hamming distance summed over the ordered
            pairs i != j of images: between 0 and N (N - 1); lower is more consistent.
        mean, std: float32 (L,) mean and standard deviation (ddof 0) of the distance over the
            unordered pairs i < j, each in [0, 1].
        random_delta: float32 (L,) Delta_l with random boxes, averaged over the trials.
        random_mean, random_std: float32 (L,) the same for the pair distances of all trials.
        names: the N image names.
        boxes: int64 (N, 4) the occluded part in each image, (top, left, bottom, right).
        pixels: uint8 (N, H, W, C) the images, for display.
    """

    layers: list
    delta: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    random_delta: np.ndarray
    random_mean: np.ndarray
    random_std: np.ndarray
    names: list
    boxes: np.ndarray
    pixels: np.ndarray


def correspondence(model, images, boxes, *, layers=None, trials=5, seed=0, batch_size=32,
                   memory_mb=1024, tolerance=1e-5, progress=True):
    """Delta scores of Z&F Table 1 for one occluded part, and for random boxes.

    The part is set to the model's mean pixel (`kvis.core.models.mean_pixel(model)`, through
    the model's preprocessing) in the model input; the rest of the input is kept exactly. The
    originals, the images with the part occluded and the images with random boxes occluded
    (`random_boxes`) are made a batch at a time, each batch through one compiled pass.

    Args:
        model: a Keras model.
        images: N >= 2 `kvis.ModelImage`s of one size (from `kvis.load_image`), or a
            preprocessed float32 array (N, H, W, C), showing objects of one kind.
        boxes: one (top, left, bottom, right) per image in the model image's pixels, rows
            top..bottom-1 and columns left..right-1, around the same part in each image.
        layers: layer paths (default: `kvis.last_conv_layer(model)` and
            `penultimate_layer(model)`, e.g. VGG16's block5_conv3 and fc2; Z&F used layers 5
            and 7).
        trials: how many times to draw random boxes.
        seed: seeds the random boxes.
        batch_size: images per compiled pass.
        memory_mb: the budget of one pass; the occluded images are made a batch at a time.
        tolerance: entries of eps smaller than `tolerance` times the image's largest absolute
            output at the layer count as 0: a unit out of the occluder's reach is then 0 even
            where float32 round-off differs between two forward passes.
        progress: show progress.

    Returns:
        A `Correspondence`.

    Raises:
        KvisError: fewer than two images, not as many boxes as images, a box that is empty
            or outside its image, an unknown layer, images of different sizes, or a model
            whose preprocessing kvis cannot tell.

    Example:
        >>> paths, boxes = load_boxes("eyes.json", "dogs")
        >>> images = [kvis.load_image(path, model) for path in paths]
        >>> boxes = [scale_box(box, kvis.read_image(path).shape[:2], images[0].pixels.shape[:2])
        ...          for path, box in zip(paths, boxes)]
        >>> print(correspondence_table(correspondence(model, images, boxes)))
    """
    batch = as_images(model, images)
    boxes, count = list(boxes), len(batch.x)
    if count < 2:
        raise KvisError("correspondence needs at least two images")
    if len(boxes) != count:
        raise KvisError(f"{len(boxes)} boxes given for {count} images")
    height, width = batch.x.shape[1:3]
    boxes = np.array([_checked_box(box, name, height, width)
                      for box, name in zip(boxes, batch.names)], np.int64)
    if trials < 1:
        raise KvisError(f"trials must be at least 1; got {trials}")
    graph = model_graph(model)
    paths = tuple(graph.node(path).path for path in (
        [last_conv_layer(model), penultimate_layer(model)] if layers is None
        else [layers] if isinstance(layers, str) else layers))
    if not paths:
        raise KvisError("no layers given")

    placements = np.concatenate([boxes[None], random_boxes(boxes, (height, width),
                                                           trials=trials, seed=seed)])
    fill = preprocessing_for(model)(mean_pixel(model)[None, None, None])[0, 0, 0]

    def occluded(rows):
        """Rows 0..N-1 are the images; then each placement's N occluded images."""
        made = []
        for row in range(rows.start, rows.stop):
            placement, image = divmod(row, count)
            made.append(batch.x[image] if placement == 0
                        else _occlude(batch.x[image], placements[placement - 1][image], fill))
        return (np.stack(made),)

    outputs = run_batches(score_pass(model, None, layers=paths), occluded,
                          count=count * (1 + len(placements)),
                          batch_size=rows_within(model, memory_mb, batch_size=batch_size),
                          desc="correspondence", progress=progress)
    flats = [outputs[path].reshape(len(outputs[path]), -1) for path in paths]

    scores = np.zeros((6, len(paths)), np.float32)
    for column, flat in enumerate(flats):
        originals = flat[:count]
        distances = np.stack([
            pair_distances(_signs(originals, flat[count * (k + 1):count * (k + 2)], tolerance))
            for k in range(len(placements))])  # (1 + trials, pairs)
        part, random = distances[0], distances[1:]
        scores[:, column] = (2 * part.sum(), part.mean(), part.std(),
                             2 * random.sum(axis=1).mean(), random.mean(), random.std())
    return Correspondence(list(paths), *scores, list(batch.names), boxes, batch.pixels)


def pair_distances(signs):
    """Normalized Hamming distances between the rows of `signs`, for each pair i < j.

    Args:
        signs: (N, F) the signs of eps, one row per image.

    Returns:
        float64 (N (N - 1) / 2,) the fraction of the F entries whose signs differ, pairs in
        the order (0, 1), (0, 2), ..., (1, 2), ...
    """
    signs = np.asarray(signs)
    return np.array([np.count_nonzero(signs[i] != signs[j]) / signs.shape[1]
                     for i, j in itertools.combinations(range(len(signs)), 2)])


def random_boxes(boxes, size, *, trials=5, seed=0):
    """Boxes of the same heights and widths at uniformly random positions inside the image.

    Args:
        boxes: int (N, 4) (top, left, bottom, right).
        size: the image's (height, width).
        trials: how many sets of N boxes to draw.
        seed: seeds `np.random.default_rng`.

    Returns:
        int64 (trials, N, 4) (top, left, bottom, right).
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, size[0] - heights + 1, (trials, len(boxes)))
    lefts = rng.integers(0, size[1] - widths + 1, (trials, len(boxes)))
    return np.stack([tops, lefts, tops + heights, lefts + widths], axis=-1).astype(np.int64)


def load_boxes(path, folder):
    """Read the part to occlude in each image from a JSON file.

    Args:
        path: a JSON file `{"image file name": [x, y, width, height], ...}`, x and y the left
            and top edges in the original image's pixels.
        folder: the folder holding the images.

    Returns:
        `(paths, boxes)`: the image paths, `folder / name` sorted by name, and their
        `(x, y, width, height)` boxes (convert them with `scale_box`).

    Raises:
        KvisError: a missing or malformed file, a malformed box, or images missing from
            `folder` (all named).
    """
    path, folder = Path(path), Path(folder)
    if not path.is_file():
        raise KvisError(f"boxes file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KvisError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not data:
        raise KvisError(f'{path}: expected {{"image file name": [x, y, width, height], ...}}')
    names = sorted(data)
    for name in names:
        box = data[name]
        if not (isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
                and box[0] >= 0 and box[1] >= 0 and box[2] > 0 and box[3] > 0):
            raise KvisError(f"{path}: the box of {name!r} must be [x, y, width, height] with "
                            f"x, y >= 0 and a positive width and height; got {box!r}")
    if missing := [name for name in names if not (folder / name).is_file()]:
        raise KvisError(f"images of {path} not found in {folder}: {', '.join(missing)}")
    return [folder / name for name in names], [tuple(data[name]) for name in names]


def scale_box(box_xywh, original_hw, model_hw):
    """A box in the original image's pixels -> the same region in the model image's pixels.

    Args:
        box_xywh: (x, y, width, height) in the original image.
        original_hw: the original image's (height, width), e.g. `read_image(path).shape[:2]`.
        model_hw: the model image's (height, width).

    Returns:
        int `(top, left, bottom, right)`, bottom and right exclusive: the model pixels the box
        covers, at least partly (at least one pixel).
    """
    x, y, width, height = (float(v) for v in box_xywh)
    scale_y, scale_x = model_hw[0] / original_hw[0], model_hw[1] / original_hw[1]
    top, left = math.floor(y * scale_y + 1e-6), math.floor(x * scale_x + 1e-6)
    bottom = max(top + 1, math.ceil((y + height) * scale_y - 1e-6))
    right = max(left + 1, math.ceil((x + width) * scale_x - 1e-6))
    return top, left, bottom, right


def correspondence_table(result):
    """The Delta scores as an aligned text table, one row per layer.

    Returns:
        A string with the columns layer, Delta part, part mean ± std, Delta random and
        random mean ± std.
    """
    header = ["layer", "Delta part", "part mean ± std", "Delta random", "random mean ± std"]
    rows = [[path, f"{result.delta[i]:.3f}", f"{result.mean[i]:.4f} ± {result.std[i]:.4f}",
             f"{result.random_delta[i]:.3f}",
             f"{result.random_mean[i]:.4f} ± {result.random_std[i]:.4f}"]
            for i, path in enumerate(result.layers)]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    return "\n".join("  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width
                                                            in zip(row[1:], widths[1:])])
                     for row in [header, *rows])


def plot_correspondence(result, *, ax=None, title=None):
    """Mean pair distance per layer for the occluded part and for random boxes, with the
    standard deviation as error bars and the Delta scores under each layer's name.

    Args:
        result: a `Correspondence`.
        ax: the matplotlib Axes to draw on (default: a new Figure's).
        title: the axes' title.

    Returns:
        The Figure drawn in; a part bar below its random bar means the model relates the
        parts.
    """
    if ax is None:
        fig = NotebookFigure(figsize=(min(WIDEST, max(4.5, 2.2 * len(result.layers) + 1.5)), 3.8),
                             layout="constrained")
        ax = fig.subplots()
    at = np.arange(len(result.layers))
    ax.bar(at - 0.2, result.mean, 0.4, yerr=result.std, capsize=3, label="occluded part")
    ax.bar(at + 0.2, result.random_mean, 0.4, yerr=result.random_std, capsize=3,
           label="random boxes")
    ax.set_xticks(at, [f"{path}\nΔ {part:.2f} vs {random:.2f}" for path, part, random
                       in zip(result.layers, result.delta, result.random_delta)], fontsize=8)
    ax.set_ylabel("Hamming distance of sign(eps), pair mean", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=8)
    ax.set_title(title or f"correspondence of {len(result.names)} images (Zeiler & Fergus "
                          "2014, Table 1)\nlower is more consistent", fontsize=9)
    return fit_axes(ax)


def _checked_box(box, name, height, width):
    values = np.asarray(box)
    if values.shape != (4,) or not np.issubdtype(values.dtype, np.number) or np.any(
            values != np.round(values)):
        raise KvisError(f"the box of image {name!r} must be four whole numbers (top, left, "
                        f"bottom, right); got {box!r}")
    top, left, bottom, right = (int(v) for v in values)
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise KvisError(f"box (top, left, bottom, right) = {(top, left, bottom, right)} of "
                        f"image {name!r} is empty or outside the {height}x{width} image")
    return top, left, bottom, right


def _occlude(x, box, fill):
    """float32 (H, W, C) model input with rows top..bottom-1, columns left..right-1 set to
    `fill` (the preprocessed fill pixel)."""
    top, left, bottom, right = box
    occluded = np.array(x, np.float32)
    occluded[top:bottom, left:right] = fill
    return occluded


def _signs(originals, occluded, tolerance):
    """sign(eps) as int8 (N, F), with |eps| <= tolerance * the image's largest |output| as 0."""
    eps = originals.astype(np.float64) - occluded
    scale = np.maximum(np.abs(originals).max(axis=1), np.abs(occluded).max(axis=1))
    return np.where(np.abs(eps) <= tolerance * scale[:, None], 0, np.sign(eps)).astype(np.int8)
