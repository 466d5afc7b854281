"""The explicit deconvnet of Zeiler & Fergus (ECCV 2014, section 2.1), layer by layer: a signal
goes down through transposed filters (`tf.nn.conv2d_transpose`), max-pool switches recorded on
the forward pass (unpooling), and rectification at every ReLU; "guided" also masks by the
forward ReLU (Springenberg et al. 2015). One compiled pass per model, layer and variant.
"""

import keras
import numpy as np
import tensorflow as tf

from kvis.core.backward_rules import forward_values, is_relu, is_relu_layer
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.runner import compiled, run_batches


def explicit_deconvnet(model, x, path, signal, *, before_activation=False, guided=False,
                       batch_size=32, progress=True):
    """Project signals at a layer's output down to the input, one per image of `x`.

    Args:
        model: a Keras model.
        x: float32 (N, H, W, C) model input: the forward pass that sets the switches and the
            ReLU masks.
        path: the layer whose output receives the signal.
        signal: float32 (N, ...) shaped like one image's output of `path`.
        before_activation: start below the layer's own (softmax) activation.
        guided: guided backpropagation instead of the deconvnet rule at ReLUs.
        batch_size: images per compiled pass.
        progress: show progress.

    Returns:
        float32 (N, H, W, C): the projections.

    Raises:
        KvisError: a layer between `path` and the input that the deconvnet cannot pass.
    """
    step = compiled(model, ("explicit deconvnet", path, before_activation, guided),
                    lambda: _explicit_pass(model, path, before_activation, guided))
    return run_batches(step, (np.asarray(x, np.float32), np.asarray(signal, np.float32)),
                       batch_size=batch_size, desc="guided" if guided else "deconvnet",
                       progress=progress)


def _explicit_pass(model, path, before_activation, guided):
    graph = model_graph(model)
    order = list(graph.nodes.values())
    end = [node.path for node in order].index(path)

    # Without autograph, a layer the deconvnet cannot pass raises its KvisError as it is.
    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])),
                                  tf.TensorSpec((None, *order[end].output.shape[1:]))],
                 autograph=False)
    def step(x, signal):
        return _projection(graph, order, end, x, signal, before_activation, guided)

    return step


def _projection(graph, order, end, x, signal, before_activation, guided):
    """The signal at the input, from `signal` at the output of `order[end]`."""
    values = forward_values(graph, x)
    signals = {id(order[end].output): signal}
    for position in range(end, -1, -1):
        node = order[position]
        if node.is_container:  # its output is its last layer's: the signal waits there
            continue
        signal = signals.pop(id(node.output), None)
        if signal is None:
            continue
        skip_activation = before_activation and position == end
        inputs = [values[id(t)] for t in node.inputs]
        downward = _down(node, signal, inputs, values[id(node.output)], guided, skip_activation)
        for tensor, part in zip(node.inputs, downward):
            signals[id(tensor)] = signals[id(tensor)] + part if id(tensor) in signals else part
    return signals[id(graph.input)]


def _down(node, signal, inputs, output, guided, skip_activation):
    """The signal at a layer's inputs, from the signal at its output: one deconvnet layer."""
    layer = node.layer
    if is_relu_layer(layer):
        return [_rectify(signal, output, guided)]
    if isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.linear:
        return [signal]
    if not skip_activation:
        signal = _through_activation(node, signal, output, guided)
    (inp, *_) = inputs
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [tf.nn.depthwise_conv2d_backprop_input(
            tf.shape(inp), layer.kernel, signal, (1, *layer.strides, 1),
            layer.padding.upper(), dilations=layer.dilation_rate)]
    elif isinstance(layer, keras.layers.Conv2D) and layer.groups == 1:
        return [tf.nn.conv2d_transpose(signal, layer.kernel, tf.shape(inp),
                                       (1, *layer.strides, 1), layer.padding.upper(),
                                       dilations=(1, *layer.dilation_rate, 1))]
    elif isinstance(layer, keras.layers.Dense):
        return [tf.matmul(signal, layer.kernel, transpose_b=True)]
    elif isinstance(layer, keras.layers.MaxPooling2D):
        return [_unpool(signal, inp, layer)]
    elif isinstance(layer, keras.layers.AveragePooling2D):
        return [tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.shape(inp), grad=signal,
                                       ksize=(1, *layer.pool_size, 1),
                                       strides=(1, *layer.strides, 1),
                                       padding=layer.padding.upper())]
    elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
        height, width = inp.shape[1:3]
        spread = tf.reshape(signal, (-1, 1, 1, inp.shape[-1])) / float(height * width)
        return [tf.broadcast_to(spread, tf.shape(inp))]
    elif isinstance(layer, keras.layers.BatchNormalization):
        scale = tf.math.rsqrt(layer.moving_variance + layer.epsilon)
        return [signal * (scale * layer.gamma if layer.scale else scale)]
    elif isinstance(layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        height, width = output.shape[1:3]
        return [signal[:, top:height - bottom, left:width - right, :]]
    elif isinstance(layer, keras.layers.Add):
        return [signal] * len(inputs)
    elif isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
        return [tf.reshape(signal, tf.shape(inp))]
    elif isinstance(layer, (keras.layers.Dropout, keras.layers.InputLayer)):
        return [signal]
    raise KvisError(f"the deconvnet cannot pass through layer {node.path!r} "
                    f"({type(layer).__name__}); method='gradient' works for any graph")


def _through_activation(node, signal, output, guided):
    """The signal below a layer's own (fused) activation: rectified for a ReLU."""
    activation = getattr(node.layer, "activation", None)
    if is_relu(activation):
        return _rectify(signal, output, guided)
    if activation in (None, keras.activations.linear):
        return signal
    raise KvisError(f"the deconvnet cannot pass through the {activation.__name__} activation "
                    f"of layer {node.path!r}; method='gradient' works for any graph")


def _rectify(signal, output, guided):
    rectified = tf.nn.relu(signal)
    return rectified * tf.cast(output > 0, signal.dtype) if guided else rectified


def _unpool(signal, inp, layer):
    """Undo max pooling: each pooled value goes back to where its maximum came from."""
    _, switches = tf.nn.max_pool_with_argmax(inp, (1, *layer.pool_size, 1),
                                             (1, *layer.strides, 1), layer.padding.upper(),
                                             include_batch_in_index=True)
    flat = tf.scatter_nd(tf.reshape(switches, (-1, 1)), tf.reshape(signal, (-1,)),
                         tf.cast(tf.reshape(tf.size(inp), (1,)), tf.int64))
    return tf.reshape(flat, tf.shape(inp))


