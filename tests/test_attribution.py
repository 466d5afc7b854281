import numpy as np
import pytest

from kvis.attribution import class_scores, integrated_gradients, saliency, smoothgrad
from kvis.demo import demo_images
from kvis.models import preprocessing_for


@pytest.fixture(scope="module")
def demo_x(demo):
    images, labels = demo_images()
    return preprocessing_for(demo)(images[::100])


def test_saliency_is_the_plain_gradient_of_the_top_class(tiny, images):
    import keras
    import tensorflow as tf

    result = saliency(tiny, images)
    np.testing.assert_array_equal(result.classes, tiny.predict(images, verbose=0).argmax(axis=1))
    features = keras.Model(tiny.input, tiny.get_layer("gap").output)
    dense = tiny.get_layer("predictions")
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.matmul(features(x), dense.kernel) + dense.bias
        chosen = tf.reduce_sum(tf.gather(logits, result.classes, axis=1, batch_dims=1))
    np.testing.assert_allclose(result.values, tape.gradient(chosen, x), rtol=1e-5, atol=1e-7)
    assert result.maps.shape == (2, 16, 16) and result.maps.max() == pytest.approx(1.0)


def test_integrated_gradients_are_complete_within_one_percent(demo, demo_x):
    result = integrated_gradients(demo, demo_x, steps=512)
    baseline = preprocessing_for(demo)(np.zeros((len(demo_x), 28, 28, 1)))
    expected = result.scores - class_scores(demo, baseline, result.classes)
    np.testing.assert_allclose(result.values.sum(axis=(1, 2, 3)), expected, rtol=0.01)


def test_smoothgrad_averages_noisy_saliency(demo, demo_x):
    result = smoothgrad(demo, demo_x[:2], samples=8, noise=0.0, classes=[1, 2])
    plain = saliency(demo, demo_x[:2], classes=[1, 2])
    np.testing.assert_allclose(result.values, plain.values, rtol=1e-5, atol=1e-7)
    noisy = smoothgrad(demo, demo_x[:2], samples=8, classes=[1, 2], batch_size=3)
    again = smoothgrad(demo, demo_x[:2], samples=8, classes=[1, 2], batch_size=16)
    np.testing.assert_allclose(noisy.values, again.values, rtol=1e-5, atol=1e-7)
    assert not np.allclose(noisy.values, plain.values)


def test_guided_backprop_keeps_the_class_and_differs(demo, demo_x):
    guided = saliency(demo, demo_x[:2], guided=True, classes="bag")
    assert list(guided.classes) == [8, 8] and guided.method == "guided backprop"
    assert not np.allclose(guided.values, saliency(demo, demo_x[:2], classes="bag").values)
