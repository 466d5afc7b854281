"""Sanity checks for saliency methods (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): cascading model-parameter randomization.

The weighted layers are re-initialized one after another, from the output down to the input,
and each method's map is recomputed after every step. A method that explains the model must
change as the model is destroyed: its rank correlation with the original map should fall. A
method whose map survives (edge detection in disguise) does not depend on what the model
learned. The layers randomized are those of a clone of the model: the caller's model and its
weights are never touched.
"""

from dataclasses import dataclass

import keras
import numpy as np

from kvis.attribution.attention import METHODS, attention
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images
from kvis.core.models import class_label, configure_model, model_info
from kvis.core.progress import progress_bar
from kvis.core.targets import resolved_classes
from kvis.core.vocabulary import ATTENTION_METHODS
from kvis.plot.figures import NotebookFigure, fit_axes


@dataclass(frozen=True)
class SanityCheck:
    """How much each method's maps change as the model is randomized from the top down.

    Attributes:
        layers: the weighted layers in randomization order (output first); step i has
            layers[:i + 1] re-initialized (and every weighted layer between them).
        methods: the methods' names (from `kvis.core.vocabulary.ATTENTION_METHODS`).
        correlations: float32 (methods, steps) Spearman rank correlation between each method's
            original maps and its maps after each step, averaged over the images (0 where a
            map is constant).
        classes: int64 (N,) the class explained for each image, chosen on the intact model.
        class_labels: those classes as shown (names where known).
        score: "logit" or "probability".
        names: a name per image.
    """

    layers: list
    methods: list
    correlations: np.ndarray
    classes: np.ndarray
    class_labels: list
    score: str
    names: list


def cascading_randomization(model, images, methods, *, classes=None, score="logit",
                            layers=None, seed=0, batch_size=32, progress=True):
    """Re-initialize a clone's weighted layers top-down and compare each method's maps.

    The classes are chosen once, on the intact model, so the randomized models are asked
    about the same classes. The randomization happens on a clone
    (`keras.models.clone_model`, nested models included, with the model's weights copied):
    the caller's model is only read.

    Args:
        model: a Keras classifier (not changed).
        images: what `kvis.load_image` returns (one or a list), or preprocessed float32
            (N, H, W, C) model input.
        methods: names from `kvis.core.vocabulary.ATTENTION_METHODS`, e.g. ["saliency", "grad-cam"].
        classes: None (each image's top prediction), one class for all, or one per image.
        score: "logit" or "probability", for every method.
        layers: the layers after whose randomization to measure (paths); every weighted
            layer from the top down to each of them is re-initialized. Default: every layer
            with a kernel (Conv2D, Dense, ...).
        seed: seeds the new weights (Glorot-uniform kernels, zero biases).
        batch_size: images per compiled pass.
        progress: show progress (one step per checkpoint).

    Returns:
        A `SanityCheck`.

    Raises:
        KvisError: an unknown method (the choices are listed), a layer with no kernel, and
            what the methods raise.

    Example:
        >>> check = kvis.cascading_randomization(model, image, ["saliency", "grad-cam"])
        >>> kvis.plot_sanity_check(check)
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if unknown := [name for name in methods if name not in METHODS]:
        raise KvisError(f"unknown attention method {unknown[0]!r}; choose from "
                        f"{', '.join(ATTENTION_METHODS)}")
    order = _weighted_layers(model)
    checkpoints = order if layers is None else [model_graph(model).node(p).path for p in layers]
    if missing := [p for p in checkpoints if p not in order]:
        raise KvisError(f"layer {missing[0]!r} has no kernel to randomize")
    checkpoints = sorted(checkpoints, key=order.index)
    batch = as_images(model, images)
    wanted = resolved_classes(model, batch.x, classes)

    def maps(net, name):
        return attention(net, batch.x, name, classes=wanted, score=score,
                         batch_size=batch_size, progress=False).maps

    originals = {name: maps(model, name) for name in methods}
    clone = _clone(model)
    nodes = model_graph(clone).nodes
    rng = np.random.default_rng(seed)
    correlations = np.zeros((len(methods), len(checkpoints)), np.float32)
    done = 0
    with progress_bar(len(checkpoints), "cascading randomization", unit="layer",
                      progress=progress) as bar:
        for step, checkpoint in enumerate(checkpoints):
            while done <= order.index(checkpoint):
                _reinitialize(nodes[order[done]].layer, rng)
                done += 1
            for row, name in enumerate(methods):
                correlations[row, step] = np.mean([
                    rank_correlation(a, b) for a, b in zip(originals[name], maps(clone, name))])
            bar.update(1)
    return SanityCheck(checkpoints, methods, correlations, wanted,
                       [class_label(model, int(c)) for c in wanted], score, list(batch.names))


def rank_correlation(a, b):
    """Spearman rank correlation of two arrays (ties get their average rank); 0 if either
    is constant."""
    ranks_a, ranks_b = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def plot_sanity_check(result, *, ax=None, title=None):
    """Rank correlation with the original map against the layers randomized, per method.

    Args:
        result: a `SanityCheck`.
        ax: an Axes to draw on; by default a new Figure.
        title: the axes' title (default: the test's name and the classes explained).

    Returns:
        The Figure drawn in; a faithful method's curve falls towards 0.
    """
    if ax is None:
        fig = NotebookFigure(figsize=(max(6.0, 0.35 * len(result.layers) + 3), 4),
                             layout="constrained")
        ax = fig.subplots()
    steps = np.arange(len(result.layers))
    for name, row in zip(result.methods, result.correlations):
        ax.plot(steps, row, marker="o", label=name)
    ax.set_xticks(steps, result.layers, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("randomized from the top down to")
    ax.set_ylabel("rank correlation with the original map")
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.legend(fontsize=8)
    labels = ", ".join(dict.fromkeys(result.class_labels))
    ax.set_title(title or f"cascading randomization (Adebayo et al. 2018): {labels}, "
                          f"{result.score}", fontsize=9)
    return fit_axes(ax)


def _clone(model):
    """A copy of the model with its own weight variables (nested models too), same values and
    the same facts (class names, preprocessing)."""
    clone = keras.models.clone_model(model, recursive=True)
    clone.set_weights(model.get_weights())
    info = model_info(model)
    return configure_model(clone, class_names=info.class_names, preprocessing=None if
                           info.preprocessing is None else info.preprocessing.name)


def _weighted_layers(model):
    """Paths of layers with a kernel, output first."""
    paths = [path for path, node in model_graph(model).nodes.items()
             if not node.is_container and _kernels(node.layer)]
    if not paths:
        raise KvisError(f"model {model.name!r} has no layer with weights to randomize")
    return paths[::-1]


def _kernels(layer):
    """A layer's kernels: `kernel`, or a separable convolution's depthwise and pointwise
    kernels."""
    return [kernel for name in ("kernel", "depthwise_kernel", "pointwise_kernel")
            if (kernel := getattr(layer, name, None)) is not None]


def _reinitialize(layer, rng):
    """Glorot-uniform kernels, zero bias: the layer forgets what it learned."""
    for kernel in _kernels(layer):
        receptive = int(np.prod(kernel.shape[:-2])) if len(kernel.shape) > 2 else 1
        fan_in, fan_out = kernel.shape[-2] * receptive, kernel.shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel.assign(rng.uniform(-limit, limit, kernel.shape).astype(keras.backend.floatx()))
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(np.zeros(layer.bias.shape, keras.backend.floatx()))


def _ranks(values):
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks
