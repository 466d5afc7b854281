"""Sanity checks for saliency methods (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): cascading model-parameter randomization.

The weighted layers are re-initialized one after another, from the output down to the input,
and each method's map is recomputed after every step. A method that explains the model must
change as the model is destroyed: its rank correlation with the original map should fall. A
method whose map survives (edge detection in disguise) does not depend on what the model
learned. The weights are restored afterwards, whatever happens.
"""

from dataclasses import dataclass

import keras
import numpy as np
from tqdm.auto import tqdm

from kvis.errors import KvisError
from kvis.graph import model_graph
from kvis.plot import NotebookFigure


@dataclass(frozen=True)
class SanityCheck:
    """How much each method's maps change as the model is randomized from the top down.

    Attributes:
        layers: the weighted layers in randomization order (output first); step i has
            layers[:i + 1] re-initialized.
        methods: the methods' names.
        correlations: float32 (methods, steps) Spearman rank correlation between each method's
            original maps and its maps after each step, averaged over the images (0 where a
            map is constant).
    """

    layers: list
    methods: list
    correlations: np.ndarray


def cascading_randomization(model, x, methods, *, layers=None, seed=0, progress=True):
    """Re-initialize the model's weighted layers top-down and compare each method's maps.

    Args:
        model: a Keras model; its weights are changed during the check and restored after.
        x: float32 (N, H, W, C), preprocessed model input.
        methods: `{name: method}` where `method(model, x)` returns maps (N, H, W).
        layers: the layers after whose randomization to measure (paths); every weighted
            layer from the top down to each of them is re-initialized. Default: every layer
            with a kernel (Conv2D, Dense, ...).
        seed: seeds the new weights.
        progress: show a progress bar.

    Returns:
        A `SanityCheck`.
    """
    order = _weighted_layers(model)
    checkpoints = order if layers is None else [model_graph(model).node(p).path for p in layers]
    if missing := [p for p in checkpoints if p not in order]:
        raise KvisError(f"layer {missing[0]!r} has no kernel to randomize")
    checkpoints = sorted(checkpoints, key=order.index)
    nodes = model_graph(model).nodes
    originals = {name: np.asarray(method(model, x)) for name, method in methods.items()}
    saved = [w.numpy() for w in model.weights]
    rng = np.random.default_rng(seed)
    correlations = np.zeros((len(methods), len(checkpoints)), np.float32)
    try:
        done = 0
        for step, checkpoint in enumerate(tqdm(checkpoints, desc="randomizing", unit="layer",
                                               disable=not progress or None)):
            while done <= order.index(checkpoint):
                _reinitialize(nodes[order[done]].layer, rng)
                done += 1
            for row, (name, method) in enumerate(methods.items()):
                correlations[row, step] = np.mean([
                    rank_correlation(a, b) for a, b in zip(originals[name], method(model, x))])
    finally:
        for variable, value in zip(model.weights, saved):
            variable.assign(value)
    return SanityCheck(checkpoints, list(methods), correlations)


def rank_correlation(a, b):
    """Spearman rank correlation of two arrays (ties get their average rank); 0 if either
    is constant."""
    ranks_a, ranks_b = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def plot_sanity_check(result, *, title=None):
    """Rank correlation with the original map against the layers randomized, per method.

    Returns:
        A Figure; a faithful method's curve falls towards 0.
    """
    fig = NotebookFigure(figsize=(max(6.0, 0.35 * len(result.layers) + 3), 4),
                         layout="constrained")
    ax = fig.subplots()
    steps = np.arange(len(result.layers))
    for name, row in zip(result.methods, result.correlations):
        ax.plot(steps, row, marker="o", label=name)
    ax.set_xticks(steps, result.layers, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("randomized from the top down to")
    ax.set_ylabel("rank correlation with the original map")
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.legend(fontsize=8)
    ax.set_title(title or "cascading randomization (Adebayo et al. 2018)")
    return fig


def _weighted_layers(model):
    """Paths of layers with a kernel, output first."""
    paths = [path for path, node in model_graph(model).nodes.items()
             if not node.is_container and getattr(node.layer, "kernel", None) is not None]
    if not paths:
        raise KvisError(f"model {model.name!r} has no layer with weights to randomize")
    return paths[::-1]


def _reinitialize(layer, rng):
    """Glorot-uniform kernel, zero bias: the layer forgets what it learned."""
    kernel = layer.kernel
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
