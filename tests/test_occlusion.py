import keras
import numpy as np
import pytest

from kvis.analyses.occlusion import occlusion, plot_occlusion
from kvis.errors import KvisError
from kvis.models import mean_pixel, preprocessing_for


def _brute_force(model, x, size, stride, fill, layer, channel, cls):
    """One occluded image and one model call at a time: the independent reference."""
    probe = keras.Model(model.input, [model.get_layer(layer).output, model.output])
    tops = range(0, x.shape[1] - size + 1, stride)
    lefts = range(0, x.shape[2] - size + 1, stride)
    feature, probability, label = (np.zeros((len(tops), len(lefts))) for _ in range(3))
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            occluded = x.copy()
            occluded[0, top:top + size, left:left + size] = fill
            maps, probabilities = (o.numpy()[0] for o in probe(occluded))
            feature[i, j] = maps[..., channel].sum()
            probability[i, j], label[i, j] = probabilities[cls], probabilities.argmax()
    return feature, probability, label


def test_maps_equal_a_brute_force_loop(demo):
    from kvis.demo import demo_images

    images, labels = demo_images()
    x = preprocessing_for(demo)(images[np.flatnonzero(labels == 9)[:1]])
    result = occlusion(demo, x, size=7, stride=3, progress=False)
    fill = preprocessing_for(demo)(mean_pixel(demo))
    expected = _brute_force(demo, x, 7, 3, fill, result.layer, result.channel,
                            result.class_index)
    np.testing.assert_allclose(result.feature, expected[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.probability, expected[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(result.label, expected[2])
    assert result.layer == "block3_conv1" and result.class_index == 9
    assert result.feature.shape == (8, 8) and list(result.tops) == list(range(0, 22, 3))


def _region_model():
    """Class 1 is likely exactly when all 16 pixels of rows 4-7, cols 8-11 are bright:
    its logit margin is 2 * (their sum) - 31."""
    inputs = keras.Input((16, 16, 1))
    kernel = np.zeros((16, 16, 1, 1), np.float32)
    kernel[4:8, 8:12] = 1.0
    evidence = keras.layers.Conv2D(1, 16, use_bias=False, name="evidence")(inputs)
    flat = keras.layers.Flatten()(evidence)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(flat)
    model = keras.Model(inputs, outputs)
    model.get_layer("evidence").set_weights([kernel])
    model.get_layer("predictions").set_weights([np.array([[-1.0, 1.0]], np.float32),
                                                np.array([15.5, -15.5], np.float32)])
    return model


def test_probability_drops_exactly_where_the_region_is_covered():
    model = _region_model()
    x = np.full((1, 16, 16, 1), 1.0, np.float32)
    result = occlusion(model, x, size=4, stride=2, fill=0, classes=1, progress=False)
    covers = np.array([[top < 8 and top + 4 > 4 and left < 12 and left + 4 > 8
                        for left in result.lefts] for top in result.tops])
    assert result.unoccluded[1] == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-5)
    np.testing.assert_allclose(result.probability[~covers], result.unoccluded[1], rtol=1e-5)
    assert np.all(result.probability[covers] < 0.001)
    np.testing.assert_array_equal(result.label, np.where(covers, 0, 1))


def test_the_memory_budget_sets_batches_not_results(demo):
    x = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    small = occlusion(demo, x, size=5, stride=4, memory_mb=0.5, progress=False)
    large = occlusion(demo, x, size=5, stride=4, memory_mb=512, progress=False)
    np.testing.assert_allclose(small.probability, large.probability, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(small.feature, large.feature, rtol=1e-5, atol=1e-4)


def test_figure_shows_the_three_maps(demo):
    x = np.random.default_rng(1).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    result = occlusion(demo, x, size=8, stride=4, progress=False)
    figure = plot_occlusion(result, (x[0] * 255).astype(np.uint8), class_names=list("0123456789"))
    np.testing.assert_array_equal(figure.axes[1].images[1].get_array(), result.feature)
    np.testing.assert_array_equal(figure.axes[2].images[1].get_array(), result.probability)


@pytest.mark.parametrize("options, message", [
    (dict(size=40), "occluder size 40 does not fit the 28x28 image"),
    (dict(stride=0), "stride must be at least 1"),
    (dict(layer="fc1"), "'fc1' is not a spatial layer"),
    (dict(classes=10), r"class index 10 is out of range \(0-9\)"),
])
def test_bad_input_is_refused(demo, options, message):
    x = np.zeros((1, 28, 28, 1), np.float32)
    with pytest.raises(KvisError, match=message):
        occlusion(demo, x, progress=False, **{"size": 8, **options})


@pytest.mark.integration
def test_vgg16_positions(vgg16):
    x = np.random.default_rng(0).normal(0, 30, (1, 224, 224, 3)).astype(np.float32)
    result = occlusion(vgg16, x, size=64, stride=80, progress=False)
    assert result.layer == "block5_conv3" and result.feature.shape == (3, 3)
    assert np.all(np.isfinite(result.probability))
