import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph, probe
from kvis.synthesis import objectives


def _score(model, objective, x):
    bound = objective.bind(model_graph(model))
    outputs = probe(model, bound.layers)(x) if bound.layers else {}
    return bound.score(outputs, tf.constant(x)).numpy()


def test_channel_and_neuron_read_the_layer_output(tiny, images):
    conv2 = keras.Model(tiny.input, tiny.get_layer("conv2").output)(images).numpy()
    np.testing.assert_allclose(_score(tiny, objectives.channel("conv2", 3), images),
                               conv2[..., 3].mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(_score(tiny, objectives.channel("conv2", [1, 5]), images),
                               [conv2[0, ..., 1].mean(), conv2[1, ..., 5].mean()], rtol=1e-5)
    np.testing.assert_allclose(_score(tiny, objectives.neuron("conv2", 2), images),
                               conv2[:, 3, 3, 2], rtol=1e-5)
    np.testing.assert_allclose(_score(tiny, objectives.neuron("conv2", 2, (0, 5)), images),
                               conv2[:, 0, 5, 2], rtol=1e-5)


def test_class_logit_bypasses_the_softmax_without_changing_the_model(tiny, images):
    dense = tiny.get_layer("predictions")
    features = keras.Model(tiny.input, tiny.get_layer("gap").output)(images).numpy()
    logits = features @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(_score(tiny, objectives.class_logit([2, 0]), images),
                               [logits[0, 2], logits[1, 0]], rtol=1e-5)
    probabilities = tiny(images).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)  # still a softmax
    np.testing.assert_allclose(np.log(probabilities[:, 2] / probabilities[:, 0]),
                               logits[:, 2] - logits[:, 0], rtol=1e-4)


def test_class_logit_reads_before_a_separate_softmax_layer(images):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Softmax(name="softmax")(x))
    expected = keras.Model(inputs, model.get_layer("logits").output)(images).numpy()[:, 1]
    np.testing.assert_allclose(_score(model, objectives.class_logit(1), images), expected,
                               rtol=1e-5)


def test_energy_regularizers_and_feature_match_against_numpy(tiny, images):
    conv1 = keras.Model(tiny.input, tiny.get_layer("conv1").output)(images).numpy()
    np.testing.assert_allclose(_score(tiny, objectives.layer_energy("conv1"), images),
                               (conv1 ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(_score(tiny, objectives.lp_norm(6), images),
                               (np.abs(images - 0.5) ** 6).mean(axis=(1, 2, 3)), rtol=1e-5)
    dy = images[:, 1:, :-1] - images[:, :-1, :-1]
    dx = images[:, :-1, 1:] - images[:, :-1, :-1]
    np.testing.assert_allclose(_score(tiny, objectives.total_variation(2), images),
                               (dx ** 2 + dy ** 2 + 1e-8).mean(axis=(1, 2, 3)), rtol=1e-4)
    target = conv1[:1] * 1.5
    expected = -((conv1 - target) ** 2).sum(axis=(1, 2, 3)) / (target ** 2).sum()
    np.testing.assert_allclose(_score(tiny, objectives.feature_match("conv1", target), images),
                               expected, rtol=1e-5)


def test_objectives_compose(tiny, images):
    a, b = objectives.channel("conv2", 1), objectives.channel("conv1", 0)
    combined = _score(tiny, a - 2 * b + 0.5 * objectives.lp_norm(2), images)
    expected = (_score(tiny, a, images) - 2 * _score(tiny, b, images)
                + 0.5 * _score(tiny, objectives.lp_norm(2), images))
    np.testing.assert_allclose(combined, expected, rtol=1e-5)
    chosen = _score(tiny, objectives.select([a, -b]), images)
    np.testing.assert_allclose(chosen, [_score(tiny, a, images)[0], -_score(tiny, b, images)[1]],
                               rtol=1e-5)


def test_bad_units_are_refused(tiny):
    g = model_graph(tiny)
    with pytest.raises(KvisError, match=r"conv2 filter index 6 is out of range \(0-5\)"):
        objectives.channel("conv2", [0, 6]).bind(g)
    with pytest.raises(KvisError, match=r"class index 3 is out of range \(0-2\)"):
        objectives.class_logit(3).bind(g)
    with pytest.raises(KvisError, match="needs a spatial layer; 'gap'"):
        objectives.channel("gap", 0).bind(g)
    with pytest.raises(KvisError, match="outside conv2's 6x6 grid"):
        objectives.neuron("conv2", 0, (6, 0)).bind(g)
