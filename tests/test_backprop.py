import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.backprop import class_gradients, layer_gradients, run
from kvis.errors import KvisError
from kvis.graph import model_graph


def test_forward_values_are_the_models_under_every_rule(tiny, images):
    for rule in ("gradient", "deconvnet", "guided"):
        out = run(model_graph(tiny), tf.constant(images), ["predictions"], rule)["predictions"]
        np.testing.assert_allclose(out, tiny(images), rtol=1e-6)
    assert tiny.get_layer("conv1").activation.__name__ == "relu"  # the swap was undone


def test_the_gradient_rule_is_the_plain_gradient(tiny, images):
    dense = tiny.get_layer("predictions")
    features = keras.Model(tiny.input, tiny.get_layer("gap").output)
    one_hot = np.eye(3, dtype=np.float32)[[2, 0]]

    @tf.function
    def reference(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.matmul(features(x), dense.kernel) + dense.bias
            total = tf.reduce_sum(logits * one_hot)
        return tape.gradient(total, x)

    gradients, scores, classes = class_gradients(tiny, images, [2, 0], batch_size=1)
    np.testing.assert_allclose(gradients, reference(tf.constant(images)), rtol=1e-5, atol=1e-7)
    logits = features(images).numpy() @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(scores, [logits[0, 2], logits[1, 0]], rtol=1e-5)
    assert list(classes) == [2, 0]
    _, top_scores, top = class_gradients(tiny, images, [-1, -1])
    np.testing.assert_array_equal(top, logits.argmax(axis=1))
    np.testing.assert_allclose(top_scores, logits.max(axis=1), rtol=1e-5)


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


def test_the_compiled_pass_is_reused_and_does_not_keep_the_model_alive(images):
    import gc
    import weakref

    from conftest import tiny_cnn

    model = tiny_cnn()
    first, _, _ = class_gradients(model, images, [0, 1])
    model.get_layer("predictions").kernel.assign(model.get_layer("predictions").kernel * 2)
    second, _, _ = class_gradients(model, images, [0, 1])
    np.testing.assert_allclose(second, 2 * first, rtol=1e-5, atol=1e-7)  # new weights seen
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
