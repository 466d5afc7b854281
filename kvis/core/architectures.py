"""Which `keras.applications` family a model is, read from its structure, for its preprocessing.

A family is recognised by its stem, the first layers after the input, each matched by its
name *and* what it is (`conv1_conv:conv7x7/2vb>64`: a 7x7 convolution, stride 2, valid
padding, with bias, 64 filters), plus anchors found anywhere (a dense block's `Concatenate`).
Both survive fine-tuning: a base nested in a new head keeps its layers, names and kernels.
Before the stem, a model may have layers that leave pixel values alone (random flips,
resizing); a model that rescales its pixels there itself (a `Rescaling` or `Normalization`
layer, or arithmetic such as `preprocess_input` called inside the model) takes raw pixels.
Anything else is not recognised: kvis then asks rather than guess.
"""

from dataclasses import dataclass
from fnmatch import fnmatchcase

import keras

NEUTRAL = (keras.layers.InputLayer, keras.layers.RandomFlip, keras.layers.RandomRotation,
           keras.layers.RandomZoom, keras.layers.RandomTranslation, keras.layers.RandomCrop,
           keras.layers.Resizing, keras.layers.CenterCrop)
SCALING = (keras.layers.Rescaling, keras.layers.Normalization)
SCALING_OPS = {"Add", "Subtract", "Multiply", "TrueDivide", "Divide"}
REORDER_OPS = {"GetItem", "Stack", "Flip"}  # caffe's RGB -> BGR inside a model


@dataclass(frozen=True)
class Family:
    """An architecture family and how it expects its pixels.

    Attributes:
        name: the family, as `keras.applications` names it.
        preprocessing: a preset of `kvis.core.preprocessing.PREPROCESSING`.
        stem: `"name:token"` patterns (`*` matches anything) of the first layers after the
            input, in order.
        anchors: `"name:token"` patterns each matched by some layer of the model.
    """

    name: str
    preprocessing: str
    stem: tuple = ()
    anchors: tuple = ()


_INCEPTION_STEM = ("*:conv3x3/2v>32", "*:bn", "*:relu", "*:conv3x3/1v>32", "*:bn", "*:relu",
                   "*:conv3x3/1s>64", "*:bn", "*:relu", "*:maxpool", "*:conv1x1/1v>80")
FAMILIES = (
    Family("VGG", "caffe", ("block1_conv1:conv3x3/1sb>64", "block1_conv2:conv3x3/1sb>64",
                            "block1_pool:maxpool", "block2_conv1:conv3x3/1sb>128"),
           ("block5_conv3:conv3x3/1sb>512",)),
    Family("ResNet", "caffe", ("conv1_pad:pad", "conv1_conv:conv7x7/2vb>64", "conv1_bn:bn",
                               "conv1_relu:relu", "pool1_pad:pad", "pool1_pool:maxpool",
                               "conv2_block1_1_conv:conv1x1/1vb>64", "conv2_block1_1_bn:bn")),
    Family("ResNetV2", "tf", ("conv1_pad:pad", "conv1_conv:conv7x7/2vb>64", "pool1_pad:pad",
                              "pool1_pool:maxpool", "conv2_block1_preact_bn:bn",
                              "conv2_block1_preact_relu:relu", "conv2_block1_1_conv:conv1x1/1v>64"),
           ("post_bn:bn",)),
    Family("DenseNet", "torch", ("*:pad", "conv1_conv:conv7x7/2v>64", "conv1_bn:bn",
                                 "conv1_relu:relu", "*:pad", "pool1:maxpool",
                                 "conv2_block1_0_bn:bn", "conv2_block1_0_relu:relu",
                                 "conv2_block1_1_conv:conv1x1/1v>128"),
           ("conv2_block1_concat:concat",)),
    Family("InceptionV3", "tf", _INCEPTION_STEM, ("mixed0:concat", "mixed10:concat")),
    Family("InceptionResNetV2", "tf", _INCEPTION_STEM, ("mixed_5b:concat", "conv_7b:conv*")),
    Family("Xception", "tf", ("block1_conv1:conv3x3/2v>32", "block1_conv1_bn:bn",
                              "block1_conv1_act:relu", "block1_conv2:conv3x3/1v>64",
                              "block1_conv2_bn:bn", "block1_conv2_act:relu",
                              "block2_sepconv1:sep3x3/1s>128")),
    Family("MobileNet", "tf", ("conv1:conv3x3/2s>*", "conv1_bn:bn", "conv1_relu:relu6",
                               "conv_dw_1:dw3x3/1s", "conv_dw_1_bn:bn", "conv_dw_1_relu:relu6",
                               "conv_pw_1:conv1x1/1s>*")),
    Family("MobileNetV2", "tf", ("Conv1:conv3x3/2s>*", "bn_Conv1:bn", "Conv1_relu:relu6",
                                 "expanded_conv_depthwise:dw3x3/1s",
                                 "expanded_conv_depthwise_BN:bn",
                                 "expanded_conv_depthwise_relu:relu6",
                                 "expanded_conv_project:conv1x1/1s>*")),
    Family("NASNet", "tf", ("stem_conv1:conv3x3/2v>*", "stem_bn1:bn"),
           ("reduction_concat_stem_1:concat", "reduction_concat_stem_2:concat",
            "normal_concat_0:concat")),
)
RESCALES_ITSELF = Family("a model that rescales its own pixels", "none")


def recognise(graph):
    """The family of a replayed model (`kvis.core.graph.model_graph`), or None.

    Returns:
        `RESCALES_ITSELF` where the layers before the first other layer rescale the pixels,
        a `Family` of `FAMILIES` whose stem and anchors all match an RGB model, else None.
    """
    nodes = [node for node in graph.nodes.values() if not node.is_container]
    kinds = [_kind(node.layer) for node in nodes]
    start = next((i for i, kind in enumerate(kinds) if kind == "other"), len(nodes))
    if "scaling" in kinds[:start]:
        return RESCALES_ITSELF
    if "reorder" in kinds[:start] or graph.input.shape[-1] != 3:
        return None
    seen = [_signature(node) for node in nodes]
    return next((family for family in FAMILIES
                 if _fits(family.stem, seen[start:start + len(family.stem)])
                 and all(any(fnmatchcase(s, anchor) for s in seen) for anchor in family.anchors)),
                None)


def _fits(patterns, signatures):
    return len(signatures) == len(patterns) and all(
        fnmatchcase(signature, pattern) for signature, pattern in zip(signatures, patterns))


def _kind(layer):
    """neutral (leaves pixel values alone), scaling, reorder (of channels), or other."""
    if isinstance(layer, NEUTRAL):
        return "neutral"
    if isinstance(layer, SCALING) or type(layer).__name__ in SCALING_OPS:
        return "scaling"
    return "reorder" if type(layer).__name__ in REORDER_OPS else "other"


def _signature(node):
    """`"name:token"` of a layer call: its name without the models around it, and what it is."""
    return f"{node.path.rsplit('/', 1)[-1]}:{_token(node.layer)}"


def _token(layer):
    """What a layer is, in a few characters: `conv7x7/2vb>64` (kernel, stride, padding,
    bias, filters), `dw3x3/1s`, `sep3x3/1s>128`, `bn`, `relu`, `relu6`, `pad`, `maxpool`,
    `concat`, an activation's name, else the class name in lower case."""
    kind = type(layer).__name__
    short = {"Conv2D": "conv", "DepthwiseConv2D": "dw", "SeparableConv2D": "sep"}
    if kind in short:
        (kh, kw), stride = layer.kernel_size, layer.strides[0]
        token = f"{short[kind]}{kh}x{kw}/{stride}{layer.padding[0]}{'b' if layer.use_bias else ''}"
        return token if kind == "DepthwiseConv2D" else f"{token}>{layer.filters}"
    if kind == "ReLU":
        return "relu6" if layer.max_value == 6 else "relu"
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "activation")
    names = {"BatchNormalization": "bn", "ZeroPadding2D": "pad", "MaxPooling2D": "maxpool",
             "Concatenate": "concat"}
    return names.get(kind, kind.lower())
