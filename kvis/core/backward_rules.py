"""Backward rules: input gradients in which every nonlinearity's backward pass follows a rule.

The same forward pass, three ways back (Springenberg et al. 2015):
- "gradient": the true gradient through everything: saliency (Simonyan et al. 2013);
- "deconvnet": Zeiler & Fergus's deconvnet: relu(signal) at every rectifier, ignoring the
  forward pass;
- "guided": relu(signal) * (forward output > 0) at every rectifier: guided backpropagation.
A rectifier is any ReLU-like nonlinearity (`RECTIFIERS`, and the ReLU, LeakyReLU, ELU and PReLU
layers: ReLU6 and the others with `max_value`, `negative_slope` or `threshold` too), separate
or fused into a Conv2D/Dense layer; swish (silu), hard-swish (hard_silu), GELU, ELU, SELU, CELU
and mish count as rectifiers, a choice: the deconvnet is defined for ReLUs only. Under
"deconvnet" and "guided" two more layer kinds pass the signal as the explicit deconvnet does:
- a product (the Multiply layer, the `*` and `/` operations) is a gate: the signal goes
  through its first tensor input only, scaled by the other factors held at their forward
  values (squeeze-excitation `Multiply()([x, gate])`, hard-swish `x * hard_sigmoid(x)`);
- LayerNormalization is its affine scale gamma / sqrt(var + epsilon), with the statistics held
  at their forward values, as BatchNormalization's moving statistics at inference.
Everything else (sigmoid, tanh and softmax on the signal's path, linear layers, max pooling)
passes the true gradient. The model is executed node by node from its replayed graph
(`kvis.core.graph`); gradients are always computed inside `tf.function`.
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.keras_internals import twin
from kvis.core.runner import compiled, run_batches

RULES = ("gradient", "deconvnet", "guided")
# Activations rectified like a ReLU by the deconvnet and guided rules (Keras `__name__`s:
# swish is silu, hard_swish is hard_silu).
RECTIFIERS = frozenset({"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "silu",
                        "hard_silu", "gelu", "mish"})
RECTIFIER_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                    keras.layers.PReLU)
# Operations whose tensor inputs after the first are gates held at their forward values.
GATES = ("Multiply", "Divide", "TrueDivide")


def run(graph, x, paths, rule="gradient"):
    """Execute a replayed graph on `x` with nonlinearities whose backward pass follows `rule`.

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


def forward_values(graph, x, rule=None, *, until=None):
    """Every tensor of a replayed graph on input `x`: `{id(symbolic tensor): value}`.

    Args:
        graph: a `kvis.core.graph.Graph`.
        x: a tensor of model input.
        rule: a `Rule` (`relu_following`) for the backward pass; None runs the model's own.
        until: a layer path: stop after it (the nodes after it in topological order do not
            feed it); None runs the whole graph.
    """
    values = {id(graph.input): x}
    for path, node in graph.nodes.items():
        if not node.is_container:
            args, kwargs = keras.tree.map_structure(
                lambda t: values[id(t)] if isinstance(t, keras.KerasTensor) else t,
                (node.args, node.kwargs))
            values[id(node.output)] = _call(node.layer, args, kwargs, rule)
        if path == until:
            break
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
    return compiled(model, ("layer gradients", path, rule),
                    lambda jit: _layer_step(model, path, rule, jit))


def _layer_step(model, path, rule, jit):
    graph = model_graph(model)
    backward, output = relu_following(rule), graph.nodes[path].output

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])),
                                  tf.TensorSpec((None, *output.shape[1:]))],
                 jit_compile=jit)
    def step(batch, weights):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            values = forward_values(graph, batch, backward, until=path)[id(output)]
            scores = tf.reduce_sum(tf.reshape(values * weights, (tf.shape(batch)[0], -1)), 1)
            total = tf.reduce_sum(scores)
        return tape.gradient(total, batch), scores

    return step


@dataclass(frozen=True)
class Rule:
    """A backward rule, one of `RULES`."""

    name: str

    def rectified(self, x, y):
        """`y`, the forward output of a rectifier at `x`, with the rule's backward pass to
        `x` (not for "gradient": a rectifier then keeps its own)."""
        guided = self.name == "guided"

        @tf.custom_gradient
        def rectify(_x):
            def backward(signal):
                return rectify_signal(signal, y, guided)

            return tf.identity(y), backward

        return rectify(x)


def relu_following(rule):
    """The backward rule named `rule`, a `Rule` for `forward_values`.

    Raises:
        KvisError: `rule` is not one of `RULES`.
    """
    if rule not in RULES:
        raise KvisError(f"unknown backward rule {rule!r}; choose from {', '.join(RULES)}")
    return Rule(rule)


def rectify_signal(signal, output, guided):
    """The deconvnet's signal below a rectifier: relu(signal), and guided also masked where
    the forward `output` was not positive."""
    rectified = tf.nn.relu(signal)
    return rectified * tf.cast(output > 0, signal.dtype) if guided else rectified


def activation_name(layer):
    """The `__name__` of a layer's activation function, or None for a layer without one."""
    return getattr(getattr(layer, "activation", None), "__name__", None)


def is_rectifier_layer(layer):
    """Whether a layer is a rectifier on its own: a ReLU-like layer or `Activation`."""
    if isinstance(layer, keras.layers.Activation):
        return activation_name(layer) in RECTIFIERS
    return isinstance(layer, RECTIFIER_LAYERS)


def keras_operation(layer):
    """The class name of a `keras.ops` operation node (`x + y`, `ops.mean`), else None."""
    kind = type(layer)
    return kind.__name__ if kind.__module__.startswith("keras.src.ops.") else None


def is_gate(layer):
    """Whether a layer or operation multiplies by (or divides by) its later inputs."""
    return isinstance(layer, keras.layers.Multiply) or keras_operation(layer) in GATES


def normalization_scale(layer, x):
    """LayerNormalization as its affine scale at input `x`: gamma / sqrt(var + epsilon), the
    variance over the layer's axes held at its forward value; broadcastable to `x`."""
    axes = sorted(a % x.shape.rank for a in np.atleast_1d(layer.axis))
    _, variance = tf.nn.moments(x, axes, keepdims=True)
    scale = tf.math.rsqrt(variance + layer.epsilon)
    if not layer.scale:
        return scale
    shape = [x.shape[a] if a in axes else 1 for a in range(x.shape.rank)]
    return scale * tf.reshape(layer.gamma, shape)


def _call(layer, args, kwargs, rule):
    """Call a layer, its backward pass following `rule` (None: the model's own)."""
    if rule is None or rule.name == "gradient":
        return layer(*args, **kwargs)
    if is_rectifier_layer(layer):
        return rule.rectified(args[0], layer(tf.stop_gradient(args[0])))
    if is_gate(layer):
        return layer(*_hold_after_first(args), **kwargs)
    if isinstance(layer, keras.layers.LayerNormalization):
        return _scaled(args[0], layer(tf.stop_gradient(args[0])),
                       normalization_scale(layer, args[0]))
    activation = getattr(layer, "activation", None)
    if activation_name(layer) not in RECTIFIERS:
        return layer(*args, **kwargs)
    # A fused rectifier: run a linear twin of the layer (same weights) and apply the
    # activation with the rule's backward pass; the caller's layer keeps its activation.
    before = twin(layer, activation=keras.activations.linear)(*args, **kwargs)
    return rule.rectified(before, activation(tf.stop_gradient(before)))


def _hold_after_first(args):
    """`args` with every tensor after the first held: no gradient flows into it."""
    flat = keras.tree.flatten(args)
    first = next(i for i, value in enumerate(flat) if tf.is_tensor(value))
    held = [tf.stop_gradient(value) if i > first and tf.is_tensor(value) else value
            for i, value in enumerate(flat)]
    return keras.tree.pack_sequence_as(args, held)


def _scaled(x, y, scale):
    """`y` forward, with the backward pass signal * `scale` to `x`."""

    @tf.custom_gradient
    def linear(_x):
        return tf.identity(y), lambda signal: signal * scale

    return linear(x)
