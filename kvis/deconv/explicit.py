"""The explicit deconvnet of Zeiler & Fergus (ECCV 2014, section 2.1), layer by layer: a signal
goes down through transposed filters (`tf.nn.conv2d_transpose`), max-pool switches recorded on
the forward pass (unpooling), and rectification at every ReLU; "guided" also masks by the
forward ReLU (Springenberg et al. 2015). The rule at each layer kind is in
`kvis.deconv.rules`. One compiled pass per model, layer and variant.
"""

import keras
import numpy as np
import tensorflow as tf

from kvis.core.backward_rules import forward_values
from kvis.core.graph import model_graph
from kvis.core.runner import compiled, run_batches
from kvis.deconv.rules import Forward, down


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
        KvisError: a layer between `path` and the input that the deconvnet has no rule for.
    """
    step = compiled(model, ("explicit deconvnet", path, before_activation, guided),
                    lambda jit: _explicit_pass(model, path, before_activation, guided, jit))
    return run_batches(step, (np.asarray(x, np.float32), np.asarray(signal, np.float32)),
                       batch_size=batch_size, desc="guided" if guided else "deconvnet",
                       progress=progress)


def _explicit_pass(model, path, before_activation, guided, jit):
    graph = model_graph(model)
    order = list(graph.nodes.values())
    end = [node.path for node in order].index(path)

    # Without autograph, a layer the deconvnet cannot pass raises its KvisError as it is.
    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:])),
                                  tf.TensorSpec((None, *order[end].output.shape[1:]))],
                 autograph=False, jit_compile=jit)
    def step(x, signal):
        return _projection(graph, order, end, x, signal, before_activation, guided)

    return step


def _projection(graph, order, end, x, signal, before_activation, guided):
    """The signal at the input, from `signal` at the output of `order[end]`."""
    values = forward_values(graph, x, until=order[end].path)
    signals = {id(order[end].output): signal}
    for position in range(end, -1, -1):
        node = order[position]
        if node.is_container:  # its output is its last layer's: the signal waits there
            continue
        signal = signals.pop(id(node.output), None)
        if signal is None:  # nothing to project: a gate's branch, or past the start
            continue
        forward = Forward([values[id(t)] for t in node.inputs],
                          [values[id(a)] if isinstance(a, keras.KerasTensor) else a
                           for a in node.args],
                          values[id(node.output)])
        downward = down(node, signal, forward, guided=guided,
                        skip_activation=before_activation and position == end)
        for tensor, part in zip(node.inputs, downward):
            if part is not None:
                signals[id(tensor)] = signals[id(tensor)] + part if id(tensor) in signals \
                    else part
    return signals[id(graph.input)]
