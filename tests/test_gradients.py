import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.attribution.gradients import (
    guided_backprop,
    integrated_gradients,
    saliency,
    scores_of,
    smoothgrad,
)
from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.models import preprocessing_for


@pytest.fixture(scope="module")
def demo_x(demo):
    images, labels = demo_images()
    return preprocessing_for(demo)(images[::100])


def tape_gradients(tiny, images, classes, score):
    """d score_c / d input by a plain GradientTape: logits from the last Dense layer's input,
    probabilities straight from the model's softmax output."""
    features = keras.Model(tiny.input, tiny.get_layer("gap").output)
    dense = tiny.get_layer("predictions")
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = (tf.matmul(features(x), dense.kernel) + dense.bias if score == "logit"
                  else tiny(x))
        chosen = tf.gather(scores, classes, axis=1, batch_dims=1)
        total = tf.reduce_sum(chosen)
    return tape.gradient(total, x).numpy(), chosen.numpy()


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_saliency_is_the_plain_gradient_of_the_top_class(tiny, images, score):
    result = saliency(tiny, images, score=score, progress=False)
    np.testing.assert_array_equal(result.classes, tiny.predict(images, verbose=0).argmax(axis=1))
    expected, chosen = tape_gradients(tiny, images, result.classes, score)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.scores, chosen, rtol=1e-5, atol=1e-7)
    assert result.method == "saliency" and result.score == score
    assert result.raw is None and result.layer is None
    magnitude = np.abs(expected).max(axis=-1)
    np.testing.assert_allclose(result.maps, magnitude / magnitude.max(axis=(1, 2))[:, None, None],
                               rtol=1e-5)


def test_the_result_carries_the_images_and_their_class_names(demo):
    images, labels = demo_images()
    loaded = [load_image(images[i], demo) for i in (0, 100)]
    result = saliency(demo, loaded, classes=["bag", 9])
    np.testing.assert_array_equal(result.pixels, images[[0, 100]])
    assert result.names == ["array", "array"] and result.class_labels == ["bag", "ankle boot"]
    second = result[1]
    assert len(second) == 1 and second.class_labels == ["ankle boot"]
    np.testing.assert_array_equal(second.values, result.values[1:])
    np.testing.assert_array_equal(second.pixels, images[100:101])


@pytest.mark.slow
@pytest.mark.parametrize("baseline", [0, 127.5])
def test_integrated_gradients_are_complete_within_one_percent(demo, demo_x, baseline):
    result = integrated_gradients(demo, demo_x, baseline=baseline, steps=512, progress=False)
    start = preprocessing_for(demo)(np.full((len(demo_x), 28, 28, 1), baseline))
    expected = result.scores - scores_of(demo, start, result.classes)
    np.testing.assert_allclose(result.values.sum(axis=(1, 2, 3)), expected, rtol=0.01)
    assert result.method == "integrated-gradients"


def test_integrated_gradients_baseline_is_in_pixels(demo, demo_x):
    gray = np.full((28, 28, 1), 100.0)
    per_image = integrated_gradients(demo, demo_x[:2], baseline=gray, steps=16)
    number = integrated_gradients(demo, demo_x[:2], baseline=100, steps=16)
    np.testing.assert_allclose(per_image.values, number.values, rtol=1e-6, atol=1e-9)
    # the path starts at the preprocessed baseline: x - baseline factor at a pixel that is
    # exactly the baseline gives a zero attribution
    x = demo_x[:1].copy()
    x[0, 0, 0, 0] = 100.0 / 255.0
    assert integrated_gradients(demo, x, baseline=100, steps=8).values[0, 0, 0, 0] == 0
    with pytest.raises(KvisError, match=r"baseline is given in pixels, within \[0, 255\]"):
        integrated_gradients(demo, demo_x[:1], baseline=-1.0)
    with pytest.raises(KvisError, match=r"a baseline of shape \(5, 5\) does not fit"):
        integrated_gradients(demo, demo_x[:1], baseline=np.zeros((5, 5)))


@pytest.mark.slow
def test_integrated_gradients_of_probabilities_are_complete(demo, demo_x):
    result = integrated_gradients(demo, demo_x[:3], score="probability", steps=512)
    start = preprocessing_for(demo)(np.zeros((3, 28, 28, 1)))
    expected = result.scores - scores_of(demo, start, result.classes, score="probability")
    np.testing.assert_allclose(result.values.sum(axis=(1, 2, 3)), expected, atol=0.01)
    np.testing.assert_allclose(result.scores, demo(demo_x[:3]).numpy().max(axis=1), rtol=1e-5)


def test_smoothgrad_averages_noisy_saliency(demo, demo_x):
    result = smoothgrad(demo, demo_x[:2], samples=8, noise=0.0, classes=[1, 2])
    # The plain saliency of the same 16 copies, at the same batch size (CPU kernels differ by
    # about 1e-7 between batch sizes), averaged per image.
    copies = saliency(demo, np.repeat(demo_x[:2], 8, axis=0), classes=np.repeat([1, 2], 8))
    plain = copies[::8]
    np.testing.assert_allclose(result.values, copies.values.reshape(2, 8, 28, 28, 1).mean(1),
                               rtol=1e-5, atol=1e-7)
    noisy = smoothgrad(demo, demo_x[:2], samples=8, classes=[1, 2], batch_size=3)
    again = smoothgrad(demo, demo_x[:2], samples=8, classes=[1, 2], batch_size=16)
    np.testing.assert_allclose(noisy.values, again.values, rtol=1e-5, atol=1e-7)
    assert not np.allclose(noisy.values, plain.values)
    probability = smoothgrad(demo, demo_x[:2], samples=8, noise=0.0, classes=[1, 2],
                             score="probability")
    np.testing.assert_allclose(probability.values, saliency(
        demo, demo_x[:2], classes=[1, 2], score="probability").values, rtol=1e-5, atol=1e-9)


def test_guided_backprop_keeps_the_class_and_differs(demo, demo_x):
    guided = guided_backprop(demo, demo_x[:2], classes="bag")
    assert list(guided.classes) == [8, 8] and guided.method == "guided-backprop"
    assert not np.allclose(guided.values, saliency(demo, demo_x[:2], classes="bag").values)


def test_bad_input_is_refused(tiny, images):
    with pytest.raises(KvisError, match="unknown score 'prob'"):
        saliency(tiny, images, score="prob")
    with pytest.raises(KvisError, match="do not fit the model input"):
        saliency(tiny, images[0])
    with pytest.raises(KvisError, match=r"class index 7 is out of range"):
        smoothgrad(tiny, images, classes=7)


def test_integrated_gradients_report_captums_convergence_delta(demo, demo_x):
    result = integrated_gradients(demo, demo_x[:2], steps=16, progress=False)
    start = preprocessing_for(demo)(np.zeros((2, 28, 28, 1)))
    expected = result.values.sum(axis=(1, 2, 3)) - (
        result.scores - scores_of(demo, start, result.classes))
    np.testing.assert_allclose(result.delta, expected, rtol=1e-4, atol=1e-4)
    finer = integrated_gradients(demo, demo_x[:2], steps=128, progress=False)
    assert np.all(np.abs(finer.delta) <= np.abs(result.delta) + 1e-3)
    assert saliency(demo, demo_x[:1], progress=False).delta is None
    assert result[1].delta.shape == (1,)
