import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ops_model

from kvis.core.graph import model_graph, probe
from kvis.layers.receptive_fields import ReceptiveField, receptive_fields


def _geometry_model():
    """Linear layers with all-ones kernels: every unit depends on its whole receptive field."""
    ones = dict(kernel_initializer="ones", use_bias=False)
    inputs = keras.Input((21, 21, 1))
    x = keras.layers.ZeroPadding2D(((2, 0), (1, 1)), name="pad")(inputs)
    x = keras.layers.Conv2D(1, 3, name="valid3", **ones)(x)
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same", name="same3s2", **ones)(x)
    wide = keras.layers.Conv2D(1, 5, padding="same", name="wide5", **ones)(x)
    point = keras.layers.Conv2D(1, 1, name="point1", **ones)(x)
    x = keras.layers.Add(name="add")([wide, point])
    x = keras.layers.AveragePooling2D(2, name="avg")(x)
    x = keras.layers.Conv2D(1, (3, 2), strides=(1, 2), padding="same", name="rect", **ones)(x)
    return keras.Model(inputs, x)


def _support_box(model, layer, row, col):
    """Bounding box of the input pixels with a non-zero gradient for one unit (independent)."""
    sub = keras.Model(model.input, model.get_layer(layer).output)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            unit = sub(x)[0, row, col, 0]
        return tape.gradient(unit, x)

    grad = gradient(tf.ones((1, 21, 21, 1)))[0, ..., 0].numpy()
    rows, cols = np.nonzero(grad)
    return rows.min(), cols.min(), rows.max(), cols.max()


@pytest.mark.parametrize("layer", ["valid3", "same3s2", "wide5", "point1", "add", "avg", "rect"])
def test_boxes_match_the_gradient_support(layer):
    model = _geometry_model()
    field = receptive_fields(model)[layer]
    height, width = model.get_layer(layer).output.shape[1:3]
    for row, col in [(0, 0), (height - 1, width - 1), (height // 2, width // 3)]:
        top, left, bottom, right = field.box(row, col)
        clipped = (max(top, 0), max(left, 0), min(bottom, 20), min(right, 20))
        assert clipped == _support_box(model, layer, row, col), (layer, row, col)


def test_hand_computed_fields_of_a_small_chain():
    fields = receptive_fields(_geometry_model())
    assert fields["pad"] == ReceptiveField((1, 1), (1, 1), (-2.0, -1.0))
    assert fields["valid3"] == ReceptiveField((3, 3), (1, 1), (-1.0, 0.0))
    assert fields["same3s2"] == ReceptiveField((5, 5), (2, 2), (-1.0, 0.0))
    assert fields["add"] == ReceptiveField((13, 13), (2, 2), (-1.0, 0.0))


def test_non_spatial_layers_have_no_field(tiny):
    fields = receptive_fields(tiny)
    assert fields["gap"] is None and fields["predictions"] is None
    assert fields["conv2"] == ReceptiveField((8, 8), (2, 2), (2.5, 2.5))


@pytest.mark.integration
def test_vgg16_fields(vgg16):
    fields = receptive_fields(vgg16)
    # conv 3x3 adds 2 strides, pool 2x2 adds 1 stride and doubles it (hand-computed).
    expected = {
        "block1_conv1": (3, 1, 0.0), "block1_conv2": (5, 1, 0.0), "block1_pool": (6, 2, 0.5),
        "block2_conv2": (14, 2, 0.5), "block2_pool": (16, 4, 1.5), "block3_pool": (44, 8, 3.5),
        "block4_conv1": (60, 8, 3.5), "block4_pool": (100, 16, 7.5),
        "block5_conv3": (196, 16, 7.5), "block5_pool": (212, 32, 15.5),
    }
    for layer, (size, stride, offset) in expected.items():
        assert fields[layer] == ReceptiveField((size,) * 2, (stride,) * 2, (offset,) * 2), layer
    assert fields["fc1"] is None


@pytest.mark.integration
def test_resnet50_fields(resnet50):
    fields = receptive_fields(resnet50)
    # conv1 7x7/2 after 3 px padding; pool 3x3/2; each bottleneck's 3x3 adds 2 strides and
    # the stride-2 1x1 convs of conv3..conv5 double the stride (hand-computed).
    expected = {
        "conv1_conv": (7, 2), "pool1_pool": (11, 4), "conv2_block1_out": (19, 4),
        "conv2_block3_out": (35, 4), "conv3_block1_out": (51, 8), "conv3_block4_out": (99, 8),
        "conv4_block1_out": (131, 16), "conv4_block6_out": (291, 16),
        "conv5_block1_out": (355, 32), "conv5_block3_out": (483, 32),
    }
    for layer, (size, stride) in expected.items():
        assert fields[layer] == ReceptiveField((size,) * 2, (stride,) * 2, (0.0, 0.0)), layer
    assert fields["conv1_pad"].offset == (-3.0, -3.0)


def test_windows_have_one_size_and_stay_inside_the_image():
    from kvis.layers.receptive_fields import ReceptiveField

    field = ReceptiveField((10, 10), (2, 2), (0.5, 0.5))  # unit (i, j) centred at 0.5 + 2i
    assert field.box(5, 5) == (6, 6, 15, 15)
    assert field.window(5, 5, (28, 28)) == (6, 6, 15, 15)
    assert field.window(0, 13, (28, 28)) == (0, 18, 9, 27)  # moved in from both edges
    big = ReceptiveField((40, 40), (4, 4), (1.5, 1.5))
    assert big.window(3, 3, (28, 28)) == (0, 0, 27, 27)  # a field larger than the image


def _unit_support(model, path, row, col):
    """Bounding box of the input pixels with a non-zero gradient of unit (row, col) summed
    over its channels, through a probe (operation nodes too); None where there are none."""
    sub = probe(model, [path])
    x = tf.constant(np.random.default_rng(4).uniform(-1, 1, (1, 16, 16, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        unit = tf.reduce_sum(sub(x)[path][0, row, col])
    gradient = tape.gradient(unit, x)
    if gradient is None:
        return None
    rows, cols = np.nonzero(np.abs(gradient[0].numpy()).sum(-1))
    return rows.min(), cols.min(), rows.max(), cols.max()


def test_fields_through_operation_nodes_match_the_gradient_support():
    # x + y, x * 0.5, + 1.0, depthwise, separable, concatenate, a mean gate over (h, w), and
    # the gated map: with the gate through stop_gradient, the support is the local field.
    model = ops_model(stop_gate=True)
    fields, graph = receptive_fields(model), model_graph(model)
    spatial = [p for p, node in graph.nodes.items() if len(node.output.shape) == 4]
    assert {type(graph.nodes[p].layer).__name__ for p in spatial} >= {
        "Add", "Multiply", "Mean", "Sigmoid", "DepthwiseConv2D", "SeparableConv2D"}
    checked = 0
    for path in spatial:
        height, width = graph.nodes[path].output.shape[1:3]
        for row, col in {(0, 0), (height - 1, width - 1), (height // 2, width // 3)}:
            support = _unit_support(model, path, row, col)
            if support is None:  # the stopped gate itself
                assert type(graph.nodes[path].layer).__name__ == "StopGradient"
                continue
            top, left, bottom, right = fields[path].box(row, col)
            assert (max(top, 0), max(left, 0), min(bottom, 15), min(right, 15)) == support, (
                path, row, col)
            checked += 1
    assert checked >= 30


def test_a_global_gate_keeps_the_field_of_the_map_it_scales():
    model = ops_model()
    graph, fields = model_graph(model), receptive_fields(model)
    gated = next(p for p, node in graph.nodes.items()
                 if type(node.layer).__name__ == "Multiply" and len(node.inputs) == 2)
    assert fields[gated] == fields["concat"] == ReceptiveField((7, 7), (2, 2), (1.0, 1.0))
    mean = next(p for p, node in graph.nodes.items() if type(node.layer).__name__ == "Mean")
    # the whole 8x8 map of stride 2: 7 + 7 * 2 pixels, centred on unit (3.5, 3.5)
    assert fields[mean] == ReceptiveField((21, 21), (16, 16), (8.0, 8.0))
    assert fields["predictions"] is None


def _operations(model, kind):
    """Paths of the operation nodes (not layers) of one kind, in graph order: Keras names
    them by a session-wide count ("add_17"), so tests find them by kind."""
    return [path for path, node in model_graph(model).nodes.items()
            if type(node.layer).__name__ == kind and not isinstance(node.layer, keras.Layer)]


@pytest.mark.integration
def test_convnext_fields_through_its_residual_additions(convnext_tiny):
    fields = receptive_fields(convnext_tiny)
    adds = _operations(convnext_tiny, "Add")  # x + y after each block
    # stem 4x4/4; each block's 7x7 depthwise adds 6 strides of 4; the 2x2/2 downsampling.
    expected = {"convnext_tiny_stem": (4, 4, 1.5), adds[0]: (28, 4, 1.5), adds[2]: (76, 4, 1.5),
                "convnext_tiny_downsampling_block_0": (80, 8, 3.5), adds[3]: (128, 8, 3.5)}
    for layer, (size, stride, offset) in expected.items():
        assert fields[layer] == ReceptiveField((size,) * 2, (stride,) * 2, (offset,) * 2), layer
    sub = probe(convnext_tiny, [adds[0]])
    x = tf.constant(np.random.default_rng(5).uniform(0, 255, (1, 32, 32, 3)), tf.float32)
    for row, col in [(0, 0), (7, 7), (3, 5)]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            unit = tf.reduce_sum(sub(x)[adds[0]][0, row, col])
        rows, cols = np.nonzero(np.abs(tape.gradient(unit, x)[0].numpy()).sum(-1))
        top, left, bottom, right = fields[adds[0]].box(row, col)
        assert (rows.min(), cols.min(), rows.max(), cols.max()) == (
            max(top, 0), max(left, 0), min(bottom, 31), min(right, 31))


@pytest.mark.integration
def test_every_spatial_node_of_mobilenet_v3_has_a_field(mobilenet_v3_small):
    graph, fields = model_graph(mobilenet_v3_small), receptive_fields(mobilenet_v3_small)
    spatial = [p for p, node in graph.nodes.items() if len(node.output.shape) == 4]
    assert len(spatial) > 150 and all(fields[p] is not None for p in spatial)
    # the first squeeze-excitation: its hard sigmoid relu6(x + 3) * (1/6) (operation nodes)
    # sees the whole 8x8 map of 7x7 fields at stride 4; the gated map keeps the 7x7 field of
    # the depthwise conv (3x3/2 after a 3x3/2 conv).
    add, multiply = (_operations(mobilenet_v3_small, kind)[0] for kind in ("Add", "Multiply"))
    assert fields[add] == fields[multiply] == ReceptiveField((35, 35), (32, 32), (17.0, 17.0))
    assert fields["expanded_conv_squeeze_excite_mul"] == fields["expanded_conv_depthwise"] \
        == ReceptiveField((7, 7), (4, 4), (3.0, 3.0))


def test_a_one_unit_map_padded_to_a_larger_one_keeps_its_field():
    # ResNet50V2 at 32 px: conv5's 1x1 input is zero-padded to 3x3 before a valid 3x3 conv
    ones = dict(kernel_initializer="ones", use_bias=False)
    inputs = keras.Input((21, 21, 1))
    x = keras.layers.Conv2D(1, 21, name="whole", **ones)(inputs)
    x = keras.layers.ZeroPadding2D(1, name="pad1")(x)
    x = keras.layers.Conv2D(1, 3, name="after", **ones)(x)
    model = keras.Model(inputs, x)
    fields = receptive_fields(model)
    assert fields["pad1"] == ReceptiveField((21, 21), (1, 1), (9.0, 9.0))
    assert fields["after"] == ReceptiveField((23, 23), (1, 1), (10.0, 10.0))
    top, left, bottom, right = fields["after"].box(0, 0)
    assert (max(top, 0), max(left, 0), min(bottom, 20), min(right, 20)) == \
        _support_box(model, "after", 0, 0)
