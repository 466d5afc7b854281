import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.core.backward_rules import layer_gradients, run
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph


def test_forward_values_are_the_models_under_every_rule(tiny, images):
    for rule in ("gradient", "deconvnet", "guided"):
        out = run(model_graph(tiny), tf.constant(images), ["predictions"], rule)["predictions"]
        np.testing.assert_allclose(out, tiny(images), rtol=1e-6)
    assert tiny.get_layer("conv1").activation.__name__ == "relu"  # the swap was undone


def test_relu_rules_on_a_single_relu():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(inputs))
    x = np.array([[1.0, -1.0, 2.0, -2.0]], np.float32)
    weights = np.array([[1.0, 1.0, -1.0, -1.0]], np.float32)
    expected = {"gradient": [1, 0, -1, 0], "deconvnet": [1, 1, 0, 0], "guided": [1, 0, 0, 0]}
    for rule, values in expected.items():
        gradients, _ = layer_gradients(model, x, "relu", weights, rule=rule)
        np.testing.assert_array_equal(gradients[0], values)
    with pytest.raises(KvisError, match="unknown backward rule"):
        layer_gradients(model, x, "relu", weights, rule="lrp")
