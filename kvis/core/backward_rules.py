"""Backward rules: input gradients in which every ReLU's backward pass follows a chosen rule.

The same forward pass, three ways back through each ReLU (Springenberg et al. 2015):
- "gradient": the true gradient, signal * (forward input > 0): saliency (Simonyan et al. 2013);
- "deconvnet": relu(signal), ignoring the forward pass: Zeiler & Fergus's deconvnet;
- "guided": relu(signal) * (forward input > 0): guided backpropagation.
The model is executed node by node from its replayed graph (`kvis.core.graph`), with every ReLU,
separate or fused into a Conv2D/Dense layer, replaced by one whose gradient follows the rule.
Gradients are always computed inside `tf.function`.
"""

import keras
import numpy as np
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.keras_internals import twin
from kvis.core.runner import compiled, run_batches

RULES = ("gradient", "deconvnet", "guided")


def run(graph, x, paths, rule="gradient"):
    """Execute a replayed graph on `x` with ReLUs whose backward pass follows `rule`.

    Args:
        graph: a `kvis.core.graph.Graph`.
        x: a tensor (N, H, W, C) of model input.
        paths: the layer paths whose outputs to return.
        rule: one of `RULES`; the forward values are the model's own whatever the rule.

    Returns:
        `{path: tensor}`.
    """
    values = forward_values(graph, x, relu_following(rule))
    return {path: values[id(graph.nodes[path].output)] for path in paths}


def forward_values(graph, x, relu=tf.nn.relu):
    """Every tensor of a replayed graph on input `x`: `{id(symbolic tensor): value}`.

    Args:
        graph: a `kvis.core.graph.Graph`.
        x: a tensor of model input.
        relu: the function that stands in for every ReLU, separate or fused.
    """
    values = {id(graph.input): x}
    for node in graph.nodes.values():
        if node.is_container:
            continue
        args, kwargs = keras.tree.map_structure(
            lambda t: values[id(t)] if isinstance(t, keras.KerasTensor) else t,
            (node.args, node.kwargs))
        values[id(node.output)] = _call(node.layer, args, kwargs, relu)
    return values


def layer_gradients(model, x, layer, weights, *, rule="gradient", batch_size=32,
                    progress=True):
    """Gradient of the weighted sum of a layer's output with respect to the input, per image.

    The score of image n is sum(weights[n] * output[n]): with an activation kept at a layer
    it is the deconvnet's starting signal. The weights travel with each batch, so every
    batch runs the same compiled pass.

    Args:
        model: a Keras model.
        x: float32 (N, H, W, C), preprocessed model input.
        layer: a layer path.
        weights: float32 (N, ...) shaped like one image's output of `layer`.
        rule: "gradient", "deconvnet" or "guided".
        batch_size: images per compiled pass.
        progress: show progress.

    Returns:
        `(gradients, scores)`: float32 (N, H, W, C) and (N,).
    """
    return run_batches(layer_gradient_pass(model, layer, rule),
                       (np.asarray(x, np.float32), np.asarray(weights, np.float32)),
                       batch_size=batch_size, desc=rule, progress=progress)


def layer_gradient_pass(model, layer, rule="gradient"):
    """The compiled pass of `layer_gradients`: `(x, weights) -> (gradients, scores)`, for
    running over inputs made a batch at a time (`kvis.core.runner.run_batches`)."""
    path = model_graph(model).node(layer).path
    return compiled(model, (path, rule), lambda: _layer_step(model, path, rule))


def _layer_step(model, path, rule):
    graph = model_graph(model)
    relu, output = relu_following(rule), graph.nodes[path].output

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])),
                                  tf.TensorSpec((None, *output.shape[1:]))])
    def step(batch, weights):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            values = forward_values(graph, batch, relu)[id(output)]
            scores = tf.reduce_sum(tf.reshape(values * weights, (tf.shape(batch)[0], -1)), 1)
            total = tf.reduce_sum(scores)
        return tape.gradient(total, batch), scores

    return step


def is_relu(activation):
    """Whether a Keras activation function is the plain ReLU."""
    return getattr(activation, "__name__", "") == "relu"


def relu_following(rule):
    """A ReLU whose backward pass follows `rule`."""
    if rule not in RULES:
        raise KvisError(f"unknown backward rule {rule!r}; choose from {', '.join(RULES)}")

    @tf.custom_gradient
    def relu(x):
        def backward(signal):
            if rule == "deconvnet":
                return tf.nn.relu(signal)
            mask = tf.cast(x > 0, signal.dtype)
            return (tf.nn.relu(signal) if rule == "guided" else signal) * mask

        return tf.nn.relu(x), backward

    return relu


def _call(layer, args, kwargs, relu):
    """Call a layer with its ReLU, separate or fused, replaced by `relu`."""
    if is_relu_layer(layer):
        return relu(args[0])
    if not is_relu(getattr(layer, "activation", None)):
        return layer(*args, **kwargs)
    # A fused ReLU: run a linear twin of the layer (same weights) and apply ours; the
    # caller's layer keeps its activation.
    return relu(twin(layer, activation=keras.activations.linear)(*args, **kwargs))


def is_relu_layer(layer):
    """Whether a layer is a plain ReLU: ReLU() or Activation("relu")."""
    if isinstance(layer, keras.layers.Activation):
        return is_relu(layer.activation)
    return isinstance(layer, keras.layers.ReLU) and layer.max_value is None \
        and not layer.negative_slope and not layer.threshold
