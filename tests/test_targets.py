"""The one target and score pass: class targets (given or top), objectives and callables,
gradients to the input and to a layer, the compiled pass reused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvis
from kvis.core.errors import KvisError
from kvis.core.targets import input_gradients, make_target, resolved_classes, score_pass


def class_gradients(model, x, classes, *, batch_size=32):
    """(input gradients, scores, classes) of the class logits, as the gradient methods run."""
    target = make_target(model, len(x), classes=classes, purpose="test")
    out = input_gradients(model, x, target, batch_size=batch_size, progress=False)
    return out["gradient"], out["scores"], out["classes"]


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
    _, top_scores, top = class_gradients(tiny, images, None)
    np.testing.assert_array_equal(top, logits.argmax(axis=1))
    np.testing.assert_allclose(top_scores, logits.max(axis=1), rtol=1e-5)


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


def _reference_input_gradient(model, x, score):
    """d score(model outputs) / d x with TensorFlow directly: an independent computation."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(score(x))
    return tape.gradient(total, x).numpy()


def test_saliency_of_a_channel_is_the_gradient_of_its_mean(tiny, images):
    conv = keras.Model(tiny.input, tiny.get_layer("conv2").output)
    result = kvis.saliency(tiny, images, target=kvis.objectives.channel("conv2", 4),
                           progress=False)
    expected = _reference_input_gradient(
        tiny, images, lambda x: tf.reduce_mean(conv(x)[..., 4], axis=(1, 2)))
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.scores, conv(images).numpy()[..., 4].mean(axis=(1, 2)),
                               rtol=1e-5)
    assert result.classes is None and result.score == "target"
    assert result.class_labels == ["channel(conv2, 4)"] * 2


def test_grad_cam_of_a_neuron_weighs_the_layer_by_its_gradient(tiny, images):
    conv1 = keras.Model(tiny.input, tiny.get_layer("conv1").output)
    result = kvis.grad_cam(tiny, images, target=kvis.objectives.neuron("conv2", 1, (2, 3)),
                           layer="conv1", progress=False)
    a = tf.constant(conv1(images))
    with tf.GradientTape() as tape:
        tape.watch(a)
        pooled = tiny.get_layer("pool1")(a)
        total = tf.reduce_sum(tiny.get_layer("conv2")(pooled)[:, 2, 3, 1])
    weights = tape.gradient(total, a).numpy().mean(axis=(1, 2))
    expected = np.einsum("nijk,nk->nij", a.numpy(), weights)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)


def test_a_callable_target_explains_any_output(tiny, images):
    def second_minus_first(output):
        return output[:, 1] - output[:, 0]

    result = kvis.saliency(tiny, images, target=second_minus_first, progress=False)
    expected = _reference_input_gradient(tiny, images,
                                         lambda x: second_minus_first(tiny(x)))
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-7)
    assert result.class_labels == ["second_minus_first"] * 2


def test_classes_and_a_target_together_are_refused(tiny, images):
    with pytest.raises(KvisError, match="give classes or a target, not both"):
        kvis.saliency(tiny, images, classes=1, target=kvis.objectives.channel("conv2", 0))
    with pytest.raises(KvisError, match="a target is an objective"):
        kvis.saliency(tiny, images, target=3)
    with pytest.raises(KvisError, match="no layer 'conv9'"):
        kvis.grad_cam(tiny, images, target=kvis.objectives.channel("conv9", 0))


def test_top_classes_come_from_the_same_pass(tiny, images):
    expected = tiny(images).numpy().argmax(axis=1)
    np.testing.assert_array_equal(resolved_classes(tiny, images), expected)
    np.testing.assert_array_equal(resolved_classes(tiny, images, [0, 2]), [0, 2])


def test_a_second_call_traces_nothing(images):
    from conftest import tiny_cnn

    model = tiny_cnn()
    target = make_target(model, 2, classes=[0, 1], purpose="test")
    step = score_pass(model, target, gradient="input", rule="gradient")
    input_gradients(model, images, target, progress=False)
    traced = step.experimental_get_tracing_count()
    other = make_target(model, 2, classes=[2, 2], purpose="test")
    assert score_pass(model, other, gradient="input", rule="gradient") is step
    input_gradients(model, images[:1], make_target(model, 1, classes=1, purpose="test"),
                    progress=False)
    assert step.experimental_get_tracing_count() == traced


def test_another_channel_reuses_the_pass_of_the_first(images):
    from conftest import tiny_cnn

    model = tiny_cnn()
    first = kvis.saliency(model, images, target=kvis.objectives.channel("conv2", 1),
                          progress=False)
    steps = _score_passes(model)
    traced = [step.experimental_get_tracing_count() for step in steps]
    second = kvis.saliency(model, images, target=kvis.objectives.channel("conv2", 4),
                           progress=False)
    assert _score_passes(model) == steps
    assert [step.experimental_get_tracing_count() for step in steps] == traced
    conv = keras.Model(model.input, model.get_layer("conv2").output)
    expected = _reference_input_gradient(
        model, images, lambda x: tf.reduce_mean(conv(x)[..., 4], axis=(1, 2)))
    np.testing.assert_allclose(second.values, expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(first.values, second.values)


def _score_passes(model):
    """The compiled score passes cached for `model`."""
    from kvis.core.runner import _compiled

    return [step for key, step in _compiled[model].items() if key[0] == "score"]
