"""Questions about a model's layers, each answered in one place: which layers are spatial, which
is the last conv layer, the penultimate layer, the stages, the conv layers, where the class
scores are (logits or probabilities), and whether the model is a classifier."""

import keras
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.vocabulary import SCORES

_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_PADDING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)
_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def is_spatial(node):
    """Whether a graph node's output is a stack of 2-D maps (N, h, w, c)."""
    return len(getattr(node.output, "shape", ())) == 4


def spatial_layers(model):
    """Paths of the layers whose output is a stack of 2-D maps (N, h, w, c)."""
    return [path for path, node in model_graph(model).nodes.items() if is_spatial(node)]


def spatial_node(graph, layer, purpose):
    """The graph node of `layer`, checked to have spatial output.

    Args:
        graph: a `kvis.core.graph.Graph` (`model_graph(model)`).
        layer: a layer path (a unique suffix works too).
        purpose: what needs the layer, for the message ("grad-cam", "occlusion", ...).

    Raises:
        KvisError: no such layer (the closest are listed), or its output is not (N, h, w, c).
    """
    node = graph.node(layer)
    if not is_spatial(node):
        raise KvisError(f"{purpose} needs a spatial layer; {node.path!r} "
                        f"({type(node.layer).__name__}) has output shape "
                        f"{tuple(getattr(node.output, 'shape', ()))}")
    return node


def conv_layers(model):
    """Paths of the model's Conv2D, DepthwiseConv2D and SeparableConv2D layers (nested ones
    included)."""
    return [path for path, node in model_graph(model).nodes.items()
            if isinstance(node.layer, _CONV)]


def stage_layers(model):
    """The last spatial layer at each resolution: one view per stage of the network.

    For VGG16 that is block1_conv2, block2_conv2, ..., block5_conv3, block5_pool; for ResNet50
    conv1_relu, conv2_block3_out, ..., conv5_block3_out. Padding layers are skipped, and so is
    a nested model's own node: its last layer is named instead (`resnet50/conv5_block3_out`).
    A 1x1 map that a larger map follows is a side branch, not a stage: the gates of
    squeeze-and-excitation blocks (EfficientNet, MobileNetV3) are left out.
    """
    graph = model_graph(model)
    last = {}
    for path in spatial_layers(model):
        node = graph.nodes[path]
        if not (isinstance(node.layer, _PADDING) or node.is_container):
            size = tuple(node.output.shape[1:3])
            if size != (1, 1):
                last.pop((1, 1), None)
            last[size] = path
    order = {path: i for i, path in enumerate(graph.nodes)}
    return sorted(last.values(), key=order.get)


def last_conv_layer(model):
    """Path of the last spatial (N, h, w, c) layer that is not a pooling layer: the usual
    layer to explain (VGG16: block5_conv3; ResNet50: conv5_block3_out; demo: block3_conv1).

    Inside a nested base model this is the inner layer, e.g. "resnet50/conv5_block3_out" for
    `Sequential([ResNet50(include_top=False), GlobalAveragePooling2D(), Dense(5)])`.

    Raises:
        KvisError: the model has no layer with spatial output.
    """
    graph = model_graph(model)
    spatial = [node for node in graph.nodes.values()
               if is_spatial(node) and not isinstance(node.layer, _POOLING)]
    if not spatial:
        raise KvisError(f"model {model.name!r} has no spatial (conv) layer")
    # A nested model's output is also its last inner layer's output: name the inner layer.
    return graph.producer(spatial[-1].output)


def penultimate_layer(model):
    """Path of the layer that feeds the final layer, looking through Dropout (an identity at
    inference): the representation just before the classification (VGG16's fc2, the
    demo's fc1)."""
    graph = model_graph(model)
    path = graph.producer(next(reversed(graph.nodes.values())).inputs[0])
    while isinstance(graph.nodes[path].layer, keras.layers.Dropout):
        path = graph.producer(graph.nodes[path].inputs[0])
    return path


def require_classifier(model, purpose):
    """Raise KvisError unless the model's output is (N, classes)."""
    if len(model.output_shape) != 2:
        raise KvisError(f"{purpose} needs a classifier with output (N, classes); model "
                        f"{model.name!r} has output shape {model.output_shape}")


def logits_start(graph):
    """Where a model's pre-softmax class scores are.

    Returns:
        `(path, before_activation)`: the layer whose output holds the logits, or, when
        `before_activation`, the final Dense layer whose softmax activation must be skipped.

    Raises:
        KvisError: a final softmax kvis cannot bypass (fused into a layer other than Dense).
    """
    path, node = next(reversed(graph.nodes.items()))
    layer = node.layer
    if isinstance(layer, keras.layers.Softmax) or (
            isinstance(layer, keras.layers.Activation) and _is_softmax(layer.activation)):
        return graph.producer(node.inputs[0]), False
    if not _is_softmax(getattr(layer, "activation", None)):
        return path, False
    if not isinstance(layer, keras.layers.Dense):
        raise KvisError(f"cannot bypass the softmax of the final layer {path!r} "
                        f"({type(layer).__name__}); only a Dense layer's softmax is bypassed")
    return path, True


def logits(graph):
    """The pre-softmax class scores: `(path, read)`, where `read(output of path)` gives them.

    A final softmax is bypassed without changing the model: a Softmax layer is skipped, and a
    Dense layer's fused softmax is replaced by reading its input and applying its weights.
    """
    path, before_activation = logits_start(graph)
    if not before_activation:
        return path, lambda values: values
    node = graph.nodes[path]
    layer = node.layer
    return graph.producer(node.inputs[0]), lambda values: tf.matmul(values, layer.kernel) + (
        layer.bias if layer.use_bias else 0.0)


def class_scores(graph, score="logit"):
    """The class scores a method explains or records: `(path, read)` as for `logits`.

    Args:
        graph: a `kvis.core.graph.Graph`.
        score: "logit" (pre-softmax, the usual target of gradient methods) or "probability"
            (the softmax of the logits: the model's output when it ends in a softmax).

    Raises:
        KvisError: an unknown score.
    """
    check_score(score)
    path, read = logits(graph)
    if score == "logit":
        return path, read
    return path, lambda values: tf.nn.softmax(read(values), axis=-1)


def check_score(score):
    """Raise KvisError unless `score` is one of `SCORES`."""
    if score not in SCORES:
        raise KvisError(f"unknown score {score!r}; choose from {', '.join(SCORES)}")


def _is_softmax(activation):
    return activation is not None and getattr(activation, "__name__", "") == "softmax"
