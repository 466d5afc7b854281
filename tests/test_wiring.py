import warnings

import keras
import numpy as np
import pytest
from conftest import nested_functional, tiny_base

from kvis.core.errors import KvisError
from kvis.microscope.wiring import strongest_links, wiring


def _loop_norms(kernel):
    """(kernel's C_in, C_out): the norm of each slice kernel[:, :, i, j], one at a time."""
    return np.array([[np.linalg.norm(kernel[:, :, i, j]) for j in range(kernel.shape[3])]
                     for i in range(kernel.shape[2])])


def _reaches(model, layer, channels):
    """bool (C_in, C_layer): whether input unit i changes unit j of `layer`, found by
    perturbing one input unit at a time (no biases, odd functions only: 0 stays 0)."""
    sub = keras.Model(model.input, model.get_layer(layer).output)
    shape = model.input_shape[1:]
    found = []
    for unit in range(channels):
        x = np.zeros((1, *shape), np.float32)
        x[..., unit] = np.random.default_rng(unit).normal(size=shape[:2])
        found.append(np.abs(np.asarray(sub(x))).max(axis=(0, 1, 2)) > 0)
    return np.array(found)


def test_one_conv_is_the_norm_of_each_kernel_slice():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, keras.layers.Conv2D(5, 3, name="conv")(inputs))
    found = wiring(model, None, "conv")
    assert (found.layer, found.source, found.convs) == ("conv", "image", ("conv",))
    assert found.strength.dtype == np.float32 and found.strength.shape == (3, 5)
    np.testing.assert_allclose(found.strength,
                               _loop_norms(model.get_layer("conv").kernel.numpy()), rtol=1e-6)


def test_two_convs_compose_through_pooling_relu_and_batch_normalization():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 2))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.AveragePooling2D(2, name="pool_b")(x)
    model = keras.Model(inputs, x)
    a = _loop_norms(model.get_layer("conv_a").kernel.numpy())          # (2, 4)
    b = _loop_norms(model.get_layer("conv_b").kernel.numpy())          # (4, 6)
    paths = np.array([[sum(a[i, k] * b[k, j] for k in range(4)) for j in range(6)]
                      for i in range(2)])                                # over every path
    both = wiring(model, None, "pool_b")
    assert both.convs == ("conv_a", "conv_b")
    np.testing.assert_allclose(both.strength, paths, rtol=1e-6)
    second = wiring(model, "conv_a", "pool_b")
    assert (second.source, second.convs) == ("conv_a", ("conv_b",))
    np.testing.assert_allclose(second.strength, b, rtol=1e-6)
    same = wiring(model, "conv_a", "pool")                              # units 1:1
    assert same.convs == ()
    np.testing.assert_array_equal(same.strength, np.eye(4))


def test_grouped_and_depthwise_convs_join_only_the_units_they_compute_from():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 4))
    grouped = keras.layers.Conv2D(6, 3, groups=2, use_bias=False, name="grouped")(inputs)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False,
                                             name="depthwise")(grouped)
    separable = keras.layers.SeparableConv2D(3, 3, depth_multiplier=2, use_bias=False,
                                             name="separable")(inputs)
    model = keras.Model(inputs, [depthwise, separable])
    kernel = model.get_layer("grouped").kernel.numpy()                  # (3, 3, 2, 6)
    expected = np.zeros((4, 6))
    expected[:2, :3] = _loop_norms(kernel[..., :3])
    expected[2:, 3:] = _loop_norms(kernel[..., 3:])
    found = wiring(model, None, "grouped")
    np.testing.assert_allclose(found.strength, expected, rtol=1e-6)
    np.testing.assert_array_equal(found.strength > 0, _reaches(model, "grouped", 4))

    kernel = model.get_layer("depthwise").kernel.numpy()                # (3, 3, 6, 2)
    found = wiring(model, "grouped", "depthwise")
    expected = np.zeros((6, 12))
    for unit in range(6):
        for q in range(2):
            expected[unit, unit * 2 + q] = np.linalg.norm(kernel[:, :, unit, q])
    np.testing.assert_allclose(found.strength, expected, rtol=1e-6)
    both = wiring(model, None, "depthwise")
    np.testing.assert_array_equal(both.strength > 0, _reaches(model, "depthwise", 4))

    layer = model.get_layer("separable")
    depth, point = layer.depthwise_kernel.numpy(), layer.pointwise_kernel.numpy()[0, 0]
    expected = np.array([[sum(np.linalg.norm(depth[:, :, i, q]) * abs(point[i * 2 + q, j])
                              for q in range(2)) for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(wiring(model, None, "separable").strength, expected, rtol=1e-6)


def test_reading_the_kernels_warns_nothing():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.SeparableConv2D(3, 1, name="separable")(x)
    model = keras.Model(inputs, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = wiring(model, None, "separable")
    assert found.convs == ("grouped", "depthwise", "separable")


def test_a_merge_or_a_dense_layer_on_the_chain_gives_no_wiring():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 3, padding="same", name="a")(inputs)
    added = keras.layers.Add(name="add")([a, inputs])
    after = keras.layers.Conv2D(4, 1, name="after")(added)
    joined = keras.layers.Concatenate(name="concat")([after, a])
    flat = keras.layers.Dense(8 * 8 * 2, name="dense")(keras.layers.Flatten()(joined))
    back = keras.layers.Conv2D(2, 1, name="back")(keras.layers.Reshape((8, 8, 2))(flat))
    softmax = keras.layers.Conv2D(2, 1, activation="softmax", name="softmax")(back)
    model = keras.Model(inputs, softmax)
    assert wiring(model, "a", "after") is None          # through the residual Add
    assert wiring(model, None, "concat") is None
    assert wiring(model, "concat", "back") is None      # a Dense layer mixes every unit
    assert wiring(model, "back", "softmax") is None     # a softmax over the units
    assert wiring(model, "add", "after").convs == ("after",)   # after the merge: one chain


def test_bad_layers_are_one_line_errors(tiny):
    for call, match in [(lambda: wiring(tiny, "conv1", "gap"), "the wiring needs a spatial "
                                                               "layer; 'gap'"),
                        (lambda: wiring(tiny, "conv2", "conv1"),
                         "'conv2' does not come before 'conv1' in model 'tiny'")]:
        with pytest.raises(KvisError, match=match) as error:
            call()
        assert "\n" not in str(error.value)


def test_the_demo_model_stages_are_products_of_kernel_norms(demo):
    found = wiring(demo, "block1_pool", "block2_pool")
    assert found.convs == ("block2_conv1", "block2_conv2")
    expected = (_loop_norms(demo.get_layer("block2_conv1").kernel.numpy())
                @ _loop_norms(demo.get_layer("block2_conv2").kernel.numpy()))
    np.testing.assert_allclose(found.strength, expected, rtol=1e-5)


def test_layers_inside_a_nested_base_model_are_wired_by_path():
    model = nested_functional(tiny_base())
    base = model.get_layer("base")
    found = wiring(model, None, "base/conv2")
    assert (found.layer, found.convs) == ("base/conv2", ("base/conv1", "base/conv2"))
    expected = (_loop_norms(base.get_layer("conv1").kernel.numpy())
                @ _loop_norms(base.get_layer("conv2").kernel.numpy()))
    np.testing.assert_allclose(found.strength, expected, rtol=1e-6)
    assert wiring(model, "base/pool1", "base").convs == ("base/conv2",)


def test_strongest_links_sort_by_strength_then_unit_and_leave_out_zeros():
    strength = np.array([[0.5, 0.0, 2.0],
                         [0.5, 0.0, 1.0],
                         [0.9, 0.0, 2.0]], np.float32)
    assert strongest_links(strength, 0) == [(2, pytest.approx(0.9)), (0, 0.5), (1, 0.5)]
    assert strongest_links(strength, 0, 2) == [(2, pytest.approx(0.9)), (0, 0.5)]
    assert strongest_links(strength, 1) == []
    assert strongest_links(strength, 2, incoming=False) == [(2, 2.0),
                                                            (0, pytest.approx(0.9))]
    assert strongest_links(strength, 0, incoming=False) == [(2, 2.0), (0, 0.5)]
