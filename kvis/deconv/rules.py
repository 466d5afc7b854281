"""The explicit deconvnet's rule at each layer kind: the signal at a layer's inputs, from the
signal at its output. docs/deconvnet.md tabulates them.

Linear layers pass the signal through their transpose (transposed convolutions, the signal
split back by channel ranges at a concatenation, sent to every input of a sum); max pooling
unpools to the switches; rectifiers (`kvis.core.backward_rules.RECTIFIERS`) rectify; a
product is a gate: the signal goes through its first input scaled by the others, held at
their forward values; a normalization is its affine scale. The rules under "deconvnet" and
"guided" in `kvis.core.backward_rules` make the input gradient the same quantity.
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kvis.core.backward_rules import (
    RECTIFIERS,
    activation_name,
    is_rectifier_layer,
    keras_operation,
    normalization_scale,
    rectify_signal,
)
from kvis.core.errors import KvisError

GRADIENT_HINT = "method='gradient' works for any graph"


@dataclass(frozen=True)
class Forward:
    """A node's forward values.

    Attributes:
        inputs: the values of the node's input tensors (`Node.inputs`), in order.
        operands: the call's positional arguments, tensors replaced by their values.
        output: the value of the node's output.
    """

    inputs: list
    operands: list
    output: object


def down(node, signal, forward, *, guided=False, skip_activation=False):
    """The signal at a node's inputs, from the signal at its output: one deconvnet layer.

    Args:
        node: a `kvis.core.graph.Node`.
        signal: a tensor shaped like the node's output.
        forward: the node's `Forward` values.
        guided: guided backpropagation: rectifiers also mask by the forward output.
        skip_activation: start below the layer's own (fused) activation.

    Returns:
        One signal per tensor of `node.inputs`; None for a gate, which receives none.

    Raises:
        KvisError: the deconvnet has no rule for the layer, or for its activation.
    """
    layer = node.layer
    operation = keras_operation(layer)
    if operation is not None:
        return _operation_down(node, operation, signal, forward)
    if is_rectifier_layer(layer):
        return [rectify_signal(signal, forward.output, guided)]
    if isinstance(layer, keras.layers.Softmax):
        return [_softmax_down(signal, forward.output, layer.axis)]
    if not skip_activation:
        signal = _through_activation(node, signal, forward.output, guided)
    if isinstance(layer, keras.layers.Activation):
        return [signal]
    for kinds, rule in _LAYER_RULES:
        if isinstance(layer, kinds):
            return rule(layer, signal, forward.inputs)
    kind = type(layer)
    if rule := _APPLICATION_RULES.get(f"{kind.__module__}.{kind.__name__}"):
        return rule(layer, signal, forward.inputs)
    raise no_rule(node)


def no_rule(node):
    """The one-line error for a layer the deconvnet has no rule for."""
    return KvisError(f"the deconvnet has no rule for layer {node.path!r} "
                     f"({type(node.layer).__name__}); {GRADIENT_HINT}")


def _through_activation(node, signal, output, guided):
    """The signal below a layer's own activation, from the activation's forward `output`:
    rectified at a rectifier, through the local derivative at sigmoid, tanh, hard_sigmoid
    and softmax (the deconvnet defines nothing there)."""
    name = activation_name(node.layer)
    if name in (None, "linear"):
        return signal
    if name in RECTIFIERS:
        return rectify_signal(signal, output, guided)
    if name == "sigmoid":
        return signal * output * (1 - output)
    if name == "tanh":
        return signal * (1 - output * output)
    if name == "hard_sigmoid":  # relu6(x + 3) / 6
        return signal * tf.cast((output > 0) & (output < 1), signal.dtype) / 6
    if name == "softmax":
        return _softmax_down(signal, output, -1)
    raise KvisError(f"the deconvnet has no rule for the {name} activation of layer "
                    f"{node.path!r} ({type(node.layer).__name__}); {GRADIENT_HINT}")


def _softmax_down(signal, output, axis):
    return output * (signal - tf.reduce_sum(signal * output, axis, keepdims=True))


def _fit(signal, tensor):
    """The signal summed over the axes along which `tensor` was broadcast."""
    shape = tensor.shape if tf.is_tensor(tensor) else np.shape(tensor)
    extra = signal.shape.rank - len(shape)
    if extra:
        signal = tf.reduce_sum(signal, list(range(extra)))
    axes = [a for a, size in enumerate(shape) if size == 1 and signal.shape[a] != 1]
    return tf.reduce_sum(signal, axes, keepdims=True) if axes else signal


def _gated(signal, factors, path=0):
    """The signal of the factor at `path`, scaled by the other factors at their forward
    values; the others are gates (or constants) and receive none."""
    for k, factor in enumerate(factors):
        if k != path:
            signal = signal * tf.cast(factor, signal.dtype)
    return [_fit(signal, factors[path]) if k == path else None for k in range(len(factors))]


def _conv(layer, signal, inputs):
    (inp,) = inputs
    kernel, groups = layer.kernel, layer.groups
    if groups > 1 and kernel.shape[2] == 1:  # one input channel per group: depthwise
        kernel = tf.reshape(kernel, (*kernel.shape[:2], groups, kernel.shape[3] // groups))
        return [_depthwise_down(signal, kernel, inp, layer)]
    shape = tf.concat([tf.shape(inp)[:-1], [kernel.shape[2]]], 0)
    parts = [tf.nn.conv2d_transpose(part, weights, shape, (1, *layer.strides, 1),
                                    layer.padding.upper())
             for part, weights in zip(tf.split(signal, groups, -1),
                                      tf.split(_dilated(kernel, layer.dilation_rate), groups, -1))]
    return [tf.concat(parts, -1)]


def _depthwise_down(signal, kernel, inp, layer):
    return tf.nn.depthwise_conv2d_backprop_input(
        tf.shape(inp), _dilated(kernel, layer.dilation_rate), signal, (1, *layer.strides, 1),
        layer.padding.upper())


def _dilated(kernel, rates):
    """A kernel (kh, kw, ...) spread out by `rates`, zeros between its taps: a dilated
    convolution is the convolution with it (TensorFlow's CPU transposes take no dilation)."""
    for axis, rate in enumerate(rates):
        if rate > 1:
            size = kernel.shape[axis]
            spread = tf.stack([kernel] + [tf.zeros_like(kernel)] * (rate - 1), axis + 1)
            shape = (*kernel.shape[:axis], size * rate, *kernel.shape[axis + 1:])
            kernel = tf.gather(tf.reshape(spread, shape), tf.range((size - 1) * rate + 1),
                               axis=axis)
    return kernel


def _separable(layer, signal, inputs):
    pointwise = tf.einsum("...o,io->...i", signal, layer.pointwise_kernel[0, 0])
    return [_depthwise_down(pointwise, layer.depthwise_kernel, inputs[0], layer)]


def _unpool(signal, inp, pool_size, strides, padding):
    """Undo max pooling: each pooled value goes back to where its maximum came from."""
    _, switches = tf.nn.max_pool_with_argmax(inp, (1, *pool_size, 1), (1, *strides, 1),
                                             padding, include_batch_in_index=True)
    flat = tf.scatter_nd(tf.reshape(switches, (-1, 1)), tf.reshape(signal, (-1,)),
                         tf.cast(tf.reshape(tf.size(inp), (1,)), tf.int64))
    return tf.reshape(flat, tf.shape(inp))


def _global_max(layer, signal, inputs):
    (inp,) = inputs
    pooled = tf.reshape(signal, (-1, 1, 1, inp.shape[-1]))
    return [_unpool(pooled, inp, inp.shape[1:3], (1, 1), "VALID")]


def _global_average(layer, signal, inputs):
    (inp,) = inputs
    spread = tf.reshape(signal, (-1, 1, 1, inp.shape[-1])) / float(inp.shape[1] * inp.shape[2])
    return [tf.broadcast_to(spread, tf.shape(inp))]


def _average_pool(layer, signal, inputs):
    return [tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.shape(inputs[0]), grad=signal,
                                   ksize=(1, *layer.pool_size, 1),
                                   strides=(1, *layer.strides, 1),
                                   padding=layer.padding.upper())]


def _batch_norm(layer, signal, inputs):
    scale = tf.math.rsqrt(layer.moving_variance + layer.epsilon)
    return [signal * (scale * layer.gamma if layer.scale else scale)]


def _normalization(layer, signal, inputs):
    spread = tf.maximum(tf.sqrt(tf.cast(layer.variance, signal.dtype)), keras.backend.epsilon())
    return [signal * spread if layer.invert else signal / spread]


def _zero_padding(layer, signal, inputs):
    (top, bottom), (left, right) = layer.padding
    height, width = signal.shape[1:3]
    return [signal[:, top:height - bottom, left:width - right, :]]


def _cropping(layer, signal, inputs):
    (top, bottom), (left, right) = layer.cropping
    return [tf.pad(signal, [(0, 0), (top, bottom), (left, right), (0, 0)])]


def _permute(layer, signal, inputs):
    return [tf.transpose(signal, np.argsort((0, *layer.dims)))]


def _concatenate(layer, signal, inputs):
    return tf.split(signal, [t.shape[layer.axis] for t in inputs], axis=layer.axis)


_LAYER_RULES = (
    (keras.layers.DepthwiseConv2D, lambda layer, s, inputs: [
        _depthwise_down(s, layer.kernel, inputs[0], layer)]),
    (keras.layers.SeparableConv2D, _separable),
    (keras.layers.Conv2D, _conv),
    (keras.layers.Dense, lambda layer, s, inputs: [tf.einsum("...o,io->...i", s, layer.kernel)]),
    (keras.layers.MaxPooling2D, lambda layer, s, inputs: [
        _unpool(s, inputs[0], layer.pool_size, layer.strides, layer.padding.upper())]),
    (keras.layers.AveragePooling2D, _average_pool),
    (keras.layers.GlobalAveragePooling2D, _global_average),
    (keras.layers.GlobalMaxPooling2D, _global_max),
    (keras.layers.BatchNormalization, _batch_norm),
    (keras.layers.LayerNormalization, lambda layer, s, inputs: [
        s * normalization_scale(layer, inputs[0])]),
    (keras.layers.Normalization, _normalization),
    (keras.layers.Rescaling, lambda layer, s, inputs: [s * tf.cast(layer.scale, s.dtype)]),
    (keras.layers.ZeroPadding2D, _zero_padding),
    (keras.layers.Cropping2D, _cropping),
    ((keras.layers.Flatten, keras.layers.Reshape), lambda layer, s, inputs: [
        tf.reshape(s, tf.shape(inputs[0]))]),
    (keras.layers.Permute, _permute),
    (keras.layers.Concatenate, _concatenate),
    (keras.layers.Add, lambda layer, s, inputs: [_fit(s, t) for t in inputs]),
    (keras.layers.Subtract, lambda layer, s, inputs: [_fit(s, inputs[0]), -_fit(s, inputs[1])]),
    (keras.layers.Average, lambda layer, s, inputs: [_fit(s, t) / len(inputs) for t in inputs]),
    (keras.layers.Multiply, lambda layer, s, inputs: _gated(s, inputs)),
    ((keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.GaussianNoise,
      keras.layers.AlphaDropout, keras.layers.ActivityRegularization, keras.layers.Identity,
      keras.layers.InputLayer), lambda layer, s, inputs: [s]),
)

# Layers that keras.applications define for themselves, by module and class.
_APPLICATION_RULES = {
    # inputs[0] + inputs[1] * scale
    "keras.src.applications.inception_resnet_v2.CustomScaleLayer":
        lambda layer, s, inputs: [s, s * layer.scale],
    "keras.src.applications.convnext.LayerScale": lambda layer, s, inputs: [s * layer.gamma],
    "keras.src.applications.convnext.StochasticDepth": lambda layer, s, inputs: [s],
}


def _operation_down(node, operation, signal, forward):
    """A `keras.ops` operation node (`x + 3.0`, `x * gate`, `ops.mean`): the signals of its
    tensor operands."""
    operands = forward.operands
    tensors = [isinstance(argument, keras.KerasTensor) for argument in node.args]
    if operation == "Add":
        parts = [_fit(signal, value) for value in operands]
    elif operation == "Subtract":
        parts = [_fit(signal, operands[0]), -_fit(signal, operands[1])]
    elif operation == "Negative":
        parts = [-signal]
    elif operation == "Multiply":
        parts = _gated(signal, operands, tensors.index(True))
    elif operation in ("Divide", "TrueDivide") and tensors[0]:  # a numerator, not 1 / x
        parts = _gated(signal, [operands[0], 1 / operands[1]])
    elif operation in ("Reshape", "ExpandDims", "Squeeze"):
        parts = [tf.reshape(signal, tf.shape(operands[0]))]
    elif operation == "Mean":
        parts = [_mean_down(node.layer, signal, operands[0])]
    else:
        raise no_rule(node)
    return [part for part, tensor in zip(parts, tensors) if tensor]


def _mean_down(operation, signal, inp):
    """The signal spread evenly back over the axes the mean reduced."""
    rank = inp.shape.rank
    axes = range(rank) if operation.axis is None else np.atleast_1d(operation.axis) % rank
    if not operation.keepdims:
        signal = tf.reshape(signal, [1 if a in axes else s for a, s in
                                     enumerate(tf.unstack(tf.shape(inp)))])
    count = np.prod([inp.shape[a] for a in axes])
    return tf.broadcast_to(signal, tf.shape(inp)) / float(count)
