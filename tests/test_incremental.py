"""Incremental occlusion (Krypton) against the full recomputation and a brute-force loop."""

import keras
import numpy as np
import pytest

from kvis.attribution import incremental_plan
from kvis.attribution.occlusion import measured_error, occlusion, sensitivity_map
from kvis.core.anatomy import class_scores
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph, probe
from kvis.core.models import configure_model


def _seeded(model):
    """Random weights that keep activations varied: moving statistics too."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, .2, beta.shape),
                               rng.normal(0, .2, mean.shape), rng.uniform(.5, 2, variance.shape)])
    return configure_model(model, class_names=["a", "b", "c"], preprocessing="unit")


def vgg_shaped():
    """Every windowed kind in a stack: SAME and VALID, strides, dilation, a concatenation,
    depthwise and separable convs, max (padded with -inf: it sees negative inputs) and
    average pools, batch normalization, rescaling, zero padding; then Flatten and Dense (the
    fallback)."""
    keras.utils.set_random_seed(5)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Concatenate(name="concat")([x, layers.Conv2D(2, 1, name="side")(x)])
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv2")(x)  # 16 x 16
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)  # 8 x 8
    x = layers.ZeroPadding2D(((1, 2), (2, 1)), name="pad")(x)  # 11 x 11
    x = layers.DepthwiseConv2D(3, name="depthwise")(x)  # 9 x 9
    x = layers.SeparableConv2D(8, 3, padding="same", activation="relu", name="separable")(x)
    x = layers.Conv2D(8, 3, dilation_rate=2, padding="same", activation="relu", name="dilated")(x)
    x = layers.AveragePooling2D(2, name="pool2")(x)  # 4 x 4
    x = layers.Conv2D(8, 3, strides=2, name="conv3")(layers.ReLU(name="relu")(x))  # 1 x 1
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(3, name="logits")(x)
    return _seeded(keras.Model(inputs, outputs, name="vgg_shaped"))


def resnet_shaped():
    """A ResNet stem and residual blocks: a projection shortcut with stride 2, an identity
    block, a gate multiplied in, a subtraction; global pooling and a softmax head."""
    keras.utils.set_random_seed(6)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(8, 7, strides=2, name="conv1_conv")(x)  # 16 x 16
    x = layers.Activation("relu", name="conv1_relu")(layers.BatchNormalization(name="bn1")(x))
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(layers.ZeroPadding2D(1)(x))  # 8 x 8
    shortcut = layers.Conv2D(12, 1, strides=2, name="block1_0_conv")(x)  # 4 x 4
    y = layers.Conv2D(6, 1, strides=2, activation="relu", name="block1_1_conv")(x)
    y = layers.Conv2D(12, 3, padding="same", name="block1_2_conv")(y)
    x = layers.ReLU(name="block1_out")(layers.Add(name="block1_add")([shortcut, y]))
    gate = layers.Conv2D(12, 3, padding="same", activation="sigmoid", name="gate")(x)
    y = layers.Multiply(name="gated")([x, gate])
    y = layers.Conv2D(12, 3, padding="same", name="block2_conv")(y)
    x = layers.Subtract(name="block2_out")([layers.Add(name="block2_add")([x, y]), gate])
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="predictions")(x)
    return _seeded(keras.Model(inputs, outputs, name="resnet_shaped"))


def _brute_force(model, x, size, stride, value, layer):
    """One occluded image, one model call at a time: the layer's sums and the logits (the
    final Dense layer's input times its weights)."""
    final = model.layers[-1]
    probe = keras.Model(model.input, [model.get_layer(layer).output, final.input])
    kernel, bias = (np.asarray(w, np.float64) for w in final.get_weights())
    features, logits = [], []
    for top in range(0, x.shape[1] - size + 1, stride):
        for left in range(0, x.shape[2] - size + 1, stride):
            occluded = x.copy()
            occluded[0, top:top + size, left:left + size] = value
            maps, before = (np.asarray(o, np.float64)[0] for o in probe(occluded))
            features.append(maps.sum(axis=(0, 1)))
            logits.append(before @ kernel + bias)
    return np.array(features), np.array(logits)


@pytest.fixture(scope="module", params=["vgg", "resnet"])
def shaped(request):
    model = vgg_shaped() if request.param == "vgg" else resnet_shaped()
    x = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    return model, x, "dilated" if request.param == "vgg" else "block2_conv"


@pytest.mark.parametrize("full_at", [incremental_plan.FULL_AT, 1.01])
@pytest.mark.parametrize("size, stride", [(5, 3), (8, 5)])
def test_exact_incremental_equals_full_and_brute_force(shaped, monkeypatch, full_at, size,
                                                       stride):
    model, x, layer = shaped
    monkeypatch.setattr(incremental_plan, "FULL_AT", full_at)  # 1.01: never back to full maps
    kept = occlusion(model, x, size=size, stride=stride, fill=0, layer=layer, score="logit",
                     incremental=True, progress=False)
    full = occlusion(model, x, size=size, stride=stride, fill=0, layer=layer, score="logit",
                     incremental=False, progress=False)
    assert kept.inference == "incremental" and full.inference == "full"
    features, logits = _brute_force(model, x, size, stride, 0.0, layer)
    grid = kept.scores.shape
    np.testing.assert_allclose(kept.feature, features[:, kept.channel].reshape(grid),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(kept.scores, logits[:, kept.class_index].reshape(grid),
                               rtol=1e-4, atol=1e-5)
    for name in ("feature", "scores", "sensitivity"):
        np.testing.assert_allclose(getattr(kept, name), getattr(full, name), rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_array_equal(kept.label, full.label)
    assert kept.unoccluded[2] == full.unoccluded[2] and kept.channel == full.channel
    assert kept.unoccluded[:2] == pytest.approx(full.unoccluded[:2], rel=1e-5)
    where = "flatten" if model.name == "vgg_shaped" else "avg_pool"
    assert kept.fallback.split()[0] == where or full_at < 1


def test_each_window_holds_every_unit_the_occluder_changes(shaped):
    """The planned windows against the layers' own maps, position by position."""
    model, x, layer = shaped
    graph = model_graph(model)
    size, corners = 6, np.array([[0, 0], [26, 26], [13, 4], [3, 21], [17, 17]])
    found = incremental_plan.plan(model, corners, size, (layer, class_scores(graph, "logit")[0]),
                             threshold=1.0)
    windowed = [s for s in found.steps if s.kind != "full"]
    maps_of = probe(model, [s.path for s in windowed])
    before = [np.asarray(m) for m in maps_of(x).values()]
    for n, (top, left) in enumerate(corners):
        occluded = x.copy()
        occluded[0, top:top + size, left:left + size] = 0.5
        for step, clean, maps in zip(windowed, before, maps_of(occluded).values()):
            changed = np.argwhere(np.any(np.asarray(maps)[0] != clean[0], axis=-1))
            row, col = found.offsets[n, step.index]
            assert len(changed), step.path
            assert np.all((changed >= [row, col]) & (changed < [row + step.size[0],
                                                                 col + step.size[1]])), step.path
    assert {s.kind for s in windowed} >= {"sliding", "pointwise"}


def test_the_fallback_is_named_where_windows_fill_the_map(demo):
    x = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    result = occlusion(demo, x, size=7, stride=3, incremental=True, progress=False)
    assert result.fallback == "block2_conv2 (its window covers at least 50% of the map)"
    head = class_scores(model_graph(demo), "logit")[0]
    at_once = incremental_plan.plan(demo, np.zeros((1, 2), int), 28, ("block3_conv1", head))
    assert at_once.work == pytest.approx(1.0)
    assert at_once.fallback.startswith("block1_conv1 (its window covers at least")
    capped = incremental_plan.plan(demo, np.array([[12, 12]]), 4, ("block3_conv1", head),
                              threshold=0.3)
    assert capped.fallback == "flatten (Flatten is not windowed)"
    assert [s.size for s in capped.steps[:4]] == [(6, 6), (8, 8), (4, 4), (5, 5)]


def test_auto_computes_incrementally_where_that_is_less_work(demo):
    x = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    small = occlusion(demo, x, size=3, stride=2, progress=False)
    assert small.inference == "incremental"
    large = occlusion(demo, x, size=20, stride=4, progress=False)
    assert large.inference == "full" and large.fallback == ""
    exact = occlusion(demo, x, size=3, stride=2, incremental=False, progress=False)
    np.testing.assert_allclose(small.sensitivity, exact.sensitivity, atol=1e-6)


def test_a_threshold_of_one_is_exact_and_lower_ones_are_checked(shaped):
    model, x, layer = shaped
    options = dict(size=5, stride=3, fill=0, layer=layer, score="logit", progress=False)
    full = occlusion(model, x, incremental=False, **options)
    whole = occlusion(model, x, threshold=1.0, **options)
    assert whole.inference == "approximate"
    np.testing.assert_allclose(whole.scores, full.scores, rtol=1e-5, atol=1e-5)
    approximate = occlusion(model, x, threshold=0.3, check=True, **options)
    expected = np.abs(approximate.sensitivity - full.sensitivity)
    span = full.sensitivity.max() - full.sensitivity.min()
    assert approximate.error == pytest.approx((expected.max() / span, expected.mean() / span),
                                              rel=1e-4, abs=1e-7)
    assert approximate.error[0] > 0 and whole.error is None
    exact = occlusion(model, x, incremental=True, check=True, **options)
    assert exact.error[0] < 1e-5


def test_drill_down_computes_the_coarse_grid_and_the_largest_changes(shaped):
    model, x, layer = shaped
    options = dict(size=4, stride=2, fill=0, layer=layer, score="logit", progress=False)
    exact = occlusion(model, x, **options)
    everything = occlusion(model, x, drill_down=1.0, **options)
    np.testing.assert_allclose(everything.scores, exact.scores, rtol=1e-5, atol=1e-5)
    coarse = occlusion(model, x, drill_down=0.2, **options)
    assert coarse.inference == "approximate"
    np.testing.assert_allclose(coarse.scores[::2, ::2], exact.scores[::2, ::2], rtol=1e-5,
                               atol=1e-5)
    rows, cols = np.indices(exact.scores.shape)
    computed = np.isclose(coarse.scores, exact.scores, rtol=1e-5, atol=1e-5)
    nearest = coarse.scores[rows // 2 * 2, cols // 2 * 2]
    others = (rows % 2 == 1) | (cols % 2 == 1)
    # a fifth of the others computed; the rest copy their coarse neighbour above and left
    assert np.sum(computed & others) >= round(0.2 * others.sum())
    np.testing.assert_array_equal(coarse.scores[~computed], nearest[~computed])
    drops = coarse.unoccluded[1] - coarse.scores
    np.testing.assert_allclose(coarse.sensitivity, sensitivity_map(
        drops, coarse.tops, coarse.lefts, 4, (32, 32)), rtol=1e-6)


def test_batches_and_budget_do_not_change_results(demo):
    x = np.random.default_rng(2).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    options = dict(size=5, stride=3, incremental=True, progress=False)
    one = occlusion(demo, x, batch_size=1, **options)
    tight = occlusion(demo, x, memory_mb=0.2, **options)
    large = occlusion(demo, x, batch_size=200, memory_mb=4096, **options)
    for other in (tight, large):
        np.testing.assert_allclose(one.scores, other.scores, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(one.feature, other.feature, rtol=1e-6, atol=1e-5)


def test_nested_base_models_are_windowed_inside():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    base = keras.Model(inputs, keras.layers.Conv2D(8, 3, name="conv2")(x), name="base")
    model = keras.Sequential([keras.Input((24, 24, 3)), base,
                              keras.layers.GlobalAveragePooling2D(name="gap"),
                              keras.layers.Dense(3, name="head")], name="nested")
    configure_model(model, class_names=["a", "b", "c"], preprocessing="unit")
    x = np.random.default_rng(0).uniform(size=(1, 24, 24, 3)).astype(np.float32)
    options = dict(size=4, stride=4, fill=0, score="logit", progress=False)
    kept = occlusion(model, x, incremental=True, **options)
    full = occlusion(model, x, incremental=False, **options)
    assert kept.layer == "base/conv2" and kept.fallback == "gap (GlobalAveragePooling2D is " \
                                                           "not windowed)"
    np.testing.assert_allclose(kept.scores, full.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kept.feature, full.feature, rtol=1e-5, atol=1e-5)


def test_measured_error_is_relative_to_the_exact_range():
    exact = np.array([[0.0, 2.0], [4.0, -4.0]])
    assert measured_error(exact + [[0, 0], [0, 0.8]], exact) == pytest.approx((0.1, 0.025))
    assert measured_error(np.ones((2, 2)), np.zeros((2, 2))) == (1.0, 1.0)


@pytest.mark.parametrize("options, message", [
    (dict(incremental="yes"), "incremental must be True, False or 'auto'; got 'yes'"),
    (dict(threshold=0), r"threshold must be a fraction in \(0, 1\] or None; got 0"),
    (dict(threshold=1.5), r"threshold must be a fraction in \(0, 1\] or None; got 1.5"),
    (dict(drill_down=-0.1), r"drill_down must be a fraction in \(0, 1\] or None; got -0.1"),
    (dict(threshold=0.5, incremental=False), "threshold= approximates incremental inference"),
])
def test_bad_options_are_one_line(demo, options, message):
    with pytest.raises(KvisError, match=message) as error:
        occlusion(demo, np.zeros((1, 28, 28, 1), np.float32), size=8, progress=False,
                  **options)
    assert "\n" not in str(error.value)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["VGG16", "ResNet50"])
def test_applications_equal_full_recomputation(name):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3),
                                              classes=10)
    x = np.random.default_rng(0).normal(0, 30, (1, 64, 64, 3)).astype(np.float32)
    options = dict(size=12, stride=10, score="logit", progress=False)
    kept = occlusion(model, x, incremental=True, **options)
    full = occlusion(model, x, incremental=False, **options)
    assert kept.inference == "incremental" and kept.fallback
    scale = np.abs(full.scores).max()
    np.testing.assert_allclose(kept.scores, full.scores, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(kept.feature, full.feature, rtol=1e-4,
                               atol=1e-5 * np.abs(full.feature).max())
    np.testing.assert_array_equal(kept.label, full.label)
