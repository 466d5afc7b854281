"""Backward rules: input gradients in which every ReLU's backward pass follows a chosen rule.

The same forward pass, three ways back through each ReLU (Springenberg et al. 2015):
- "gradient": the true gradient, signal * (forward input > 0): saliency (Simonyan et al. 2013);
- "deconvnet": relu(signal), ignoring the forward pass: Zeiler & Fergus's deconvnet;
- "guided": relu(signal) * (forward input > 0): guided backpropagation.
The model is executed node by node from its replayed graph (`kvis.graph`), with every ReLU,
separate or fused into a Conv2D/Dense layer, replaced by one whose gradient follows the rule.
Gradients are always computed inside `tf.function`.
"""

import keras
import numpy as np
import tensorflow as tf

from kvis.errors import KvisError
from kvis.graph import model_graph
from kvis.objectives import logits
from kvis.tracing import quiet_retracing

RULES = ("gradient", "deconvnet", "guided")


def run(graph, x, paths, rule="gradient"):
    """Execute a replayed graph on `x` with ReLUs whose backward pass follows `rule`.

    Args:
        graph: a `kvis.graph.Graph`.
        x: a tensor (N, H, W, C) of model input.
        paths: the layer paths whose outputs to return.
        rule: one of `RULES`; the forward values are the model's own whatever the rule.

    Returns:
        `{path: tensor}`.
    """
    values = forward_values(graph, x, _relu(rule))
    return {path: values[id(graph.nodes[path].output)] for path in paths}


def forward_values(graph, x, relu=tf.nn.relu):
    """Every tensor of a replayed graph on input `x`: `{id(symbolic tensor): value}`.

    Args:
        graph: a `kvis.graph.Graph`.
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


def input_gradients(model, x, weights, *, layer=None, rule="gradient", batch_size=32):
    """Gradient of the weighted sum of a layer's output with respect to the input, per image.

    The score of image n is sum(weights[n] * output[n]): with one-hot weights on the class
    scores it is one class's score (saliency); with an activation kept at a layer it is
    the deconvnet's starting signal. The weights travel with each batch, so every batch
    runs the same compiled pass.

    Args:
        model: a Keras model.
        x: float32 (N, H, W, C), preprocessed model input.
        weights: float32 (N, ...) shaped like one image's output of `layer`.
        layer: a layer path, or None for the pre-softmax class scores (a final softmax is
            bypassed; the model is not changed).
        rule: "gradient", "deconvnet" or "guided".
        batch_size: images per compiled pass.

    Returns:
        `(gradients, scores)`: float32 (N, H, W, C) and (N,).
    """
    graph = model_graph(model)
    path, read = logits(graph) if layer is None else (graph.node(layer).path, tf.identity)
    relu, output = _relu(rule), graph.nodes[path].output

    @tf.function
    def step(batch, batch_weights):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            values = read(forward_values(graph, batch, relu)[id(output)])
            scores = tf.reduce_sum(tf.reshape(values * batch_weights, (tf.shape(batch)[0], -1)),
                                   axis=1)
            total = tf.reduce_sum(scores)
        return tape.gradient(total, batch), scores

    x, weights = np.asarray(x, np.float32), np.asarray(weights, np.float32)
    with quiet_retracing():
        parts = [step(tf.constant(x[i:i + batch_size]), tf.constant(weights[i:i + batch_size]))
                 for i in range(0, len(x), batch_size)]
    return (np.concatenate([p[0].numpy() for p in parts]),
            np.concatenate([p[1].numpy() for p in parts]))


def is_relu(activation):
    """Whether a Keras activation function is the plain ReLU."""
    return getattr(activation, "__name__", "") == "relu"


def _relu(rule):
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
    if _is_relu_layer(layer):
        return relu(args[0])
    if not is_relu(getattr(layer, "activation", None)):
        return layer(*args, **kwargs)
    # A fused ReLU: run the layer linear and apply ours. The swap lasts only while this
    # call is traced and is undone at once, so the caller's layer keeps its activation.
    fused = layer.activation
    layer.activation = keras.activations.linear
    try:
        return relu(layer(*args, **kwargs))
    finally:
        layer.activation = fused


def _is_relu_layer(layer):
    if isinstance(layer, keras.layers.Activation):
        return is_relu(layer.activation)
    return isinstance(layer, keras.layers.ReLU) and layer.max_value is None \
        and not layer.negative_slope and not layer.threshold
