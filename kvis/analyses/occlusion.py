"""Occlusion sensitivity (Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", ECCV 2014, Fig. 7): does the model find the object, or use its context?

A gray square slides over the image. For every position, one pass records the total
activation of the layer's strongest feature map (strongest in the unoccluded image), the
probability of the class, and the most probable label. The occluded images are made on the
device from the occluder's corners, a batch at a time, with a batch size set by a memory
budget: memory does not grow with the number of positions.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kvis.anatomy import last_conv_layer
from kvis.errors import KvisError
from kvis.graph import model_graph, probe
from kvis.images import check_input
from kvis.models import class_indices, mean_pixel
from kvis.objectives import logits
from kvis.plot import NotebookFigure
from kvis.runner import compiled


@dataclass(frozen=True)
class Occlusion:
    """What the model says with a square occluder at each position.

    Attributes:
        feature: float32 (R, C) total activation of `channel` at `layer`, per position.
        probability: float32 (R, C) probability of `class_index`, per position.
        label: int64 (R, C) the most probable class, per position.
        tops, lefts: int (R,) and (C,) the occluder's top and left edges in pixels.
        size: the occluder's side in pixels.
        layer, channel: the feature map recorded (the strongest in the unoccluded image).
        class_index: the class whose probability is recorded.
        unoccluded: `(feature, probability, label)` for the image itself.
    """

    feature: np.ndarray
    probability: np.ndarray
    label: np.ndarray
    tops: np.ndarray
    lefts: np.ndarray
    size: int
    layer: str
    channel: int
    class_index: int
    unoccluded: tuple


def occlusion(model, x, *, size=32, stride=8, fill=None, layer=None, classes=None,
              memory_mb=1024, preprocessing="auto", progress=True):
    """Slide a square occluder over one image and record the model's responses.

    Args:
        model: a Keras classifier.
        x: float32 (1, H, W, C), one preprocessed image (`kvis.load_image(...).x`).
        size: the occluder's side in pixels.
        stride: pixels between occluder positions.
        fill: the occluder's pixel value(s) in [0, 255]; default the dataset's mean pixel.
        layer: the layer whose strongest feature map is recorded (default: the last conv).
        classes: the class whose probability is recorded (index or name); default the top
            prediction for the unoccluded image.
        memory_mb: budget for one batch of occluded images and their activations.
        preprocessing: how `x` was preprocessed, to prepare the fill the same way.
        progress: show a progress bar.

    Returns:
        An `Occlusion`.

    Raises:
        KvisError: an occluder larger than the image, a stride below 1, or bad layer/class.
    """
    x = check_input(model, x)
    if len(x) != 1:
        raise KvisError(f"occlusion maps one image, (1, H, W, C); got {len(x)} images")
    height, width = x.shape[1:3]
    if not 1 <= size <= min(height, width):
        raise KvisError(f"occluder size {size} does not fit the {height}x{width} image")
    if stride < 1:
        raise KvisError(f"the occluder's stride must be at least 1; got {stride}")
    path = model_graph(model).node(layer or last_conv_layer(model)).path
    if len(model_graph(model).nodes[path].output.shape) != 4:
        raise KvisError(f"occlusion records a feature map; {path!r} is not a spatial layer")
    preprocess = preprocessing_for_quietly(model, preprocessing)
    fill = mean_pixel(model) if fill is None else np.broadcast_to(
        np.asarray(fill, np.float32), (x.shape[-1],))
    run = compiled(model, ("occlusion", path, size),
                   lambda: _occluded_pass(model, path, size, x.shape[1:]))
    wanted = int(class_indices(model, classes, 1)[0])
    inputs = (tf.constant(x), tf.constant(preprocess(fill[None, None, None])[0, 0, 0]))
    tops = np.arange(0, height - size + 1, stride)
    lefts = np.arange(0, width - size + 1, stride)
    corners = np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)
    # The first "position" covers nothing: the unoccluded image rides in the first batch.
    corners = np.concatenate([[[-size, -size]], corners]).astype(np.int32)
    batch = _batch_size(model, memory_mb)
    parts = [run(tf.constant(corners[i:i + batch]), *inputs)
             for i in tqdm(range(0, len(corners), batch), desc="occluding", unit="batch",
                           disable=not progress or None)]
    features, probabilities = (np.concatenate([p[k].numpy() for p in parts]) for k in range(2))
    channel = int(np.argmax(features[0]))
    cls = int(np.argmax(probabilities[0])) if wanted < 0 else wanted
    grid = (len(tops), len(lefts))
    return Occlusion(features[1:, channel].reshape(grid), probabilities[1:, cls].reshape(grid),
                     probabilities[1:].argmax(axis=1).reshape(grid).astype(np.int64), tops,
                     lefts, size, path, channel, cls,
                     (float(features[0, channel]), float(probabilities[0, cls]),
                      int(np.argmax(probabilities[0]))))


def plot_occlusion(result, pixels, *, class_names=None, title=None):
    """The paper's Fig. 7: the image, the feature-map and class-probability maps over it, and
    the map of the most probable label with a legend.

    Args:
        result: an `Occlusion`.
        pixels: uint8 (H, W, C), the image as the model saw it.
        class_names: names indexed by class.
        title: figure title.

    Returns:
        A Figure; each map value sits at the centre of its occluder position.
    """
    name = _namer(class_names)
    fig = NotebookFigure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    axes[0].imshow(image, cmap="gray")
    axes[0].add_patch(_square(result.tops[0], result.lefts[0], result.size))
    axes[0].set_title(f"image, occluder {result.size}x{result.size}", fontsize=9)
    extent = _extent(result)
    for ax, values, label in (
            (axes[1], result.feature, f"{result.layer} #{result.channel}: total activation"),
            (axes[2], result.probability, f"p({name(result.class_index)})")):
        ax.imshow(image, cmap="gray")
        shown = ax.imshow(values, extent=extent, alpha=0.6, cmap="jet", interpolation="nearest")
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_title(label, fontsize=9)
    labels = np.unique(result.label)
    colours = np.searchsorted(labels, result.label)
    axes[3].imshow(colours, extent=extent, cmap="tab20", vmin=0, vmax=19,
                   interpolation="nearest")
    axes[3].set_title("most probable label", fontsize=9)
    handles = [axes[3].scatter([], [], color=axes[3].images[0].cmap(i % 20), label=name(c))
               for i, c in enumerate(labels)]
    axes[3].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def _occluded_pass(model, path, size, image_shape):
    graph = model_graph(model)
    head, read = logits(graph)
    outputs_of = probe(model, [path, head])
    height, width, channels = image_shape

    @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.int32),
                                  tf.TensorSpec((1, *image_shape)),
                                  tf.TensorSpec((channels,))])
    def run(corners, image, fill):
        rows = tf.range(height)[None, :, None]
        cols = tf.range(width)[None, None, :]
        top, left = corners[:, 0, None, None], corners[:, 1, None, None]
        inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
        occluded = tf.where(inside[..., None], fill, image)
        outputs = outputs_of(occluded, training=False)
        return tf.reduce_sum(outputs[path], axis=(1, 2)), tf.nn.softmax(read(outputs[head]))

    return run


def _batch_size(model, memory_mb):
    """Images per pass so that their activations (all layers, float32) fit the budget."""
    floats = sum(int(np.prod(node.output.shape[1:])) for node in model_graph(model).nodes.values()
                 if not node.is_container and hasattr(node.output, "shape"))
    return max(1, int(memory_mb * 2 ** 20 // (4 * floats)))


def _extent(result):
    """imshow extent placing each value at its occluder's centre, in pixel coordinates."""
    half = result.size / 2 - 0.5
    step_y = result.tops[1] - result.tops[0] if len(result.tops) > 1 else result.size
    step_x = result.lefts[1] - result.lefts[0] if len(result.lefts) > 1 else result.size
    return (result.lefts[0] + half - step_x / 2, result.lefts[-1] + half + step_x / 2,
            result.tops[-1] + half + step_y / 2, result.tops[0] + half - step_y / 2)


def _square(top, left, size):
    from matplotlib.patches import Rectangle

    return Rectangle((left - 0.5, top - 0.5), size, size, fill=True, color="gray", alpha=0.8)


def _namer(class_names):
    return lambda c: f"#{c} {class_names[c]}" if class_names else f"#{c}"
