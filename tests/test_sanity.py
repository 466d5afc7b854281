import types

import keras
import numpy as np
import pytest

from kvis.attribution.attention import METHODS
from kvis.attribution.sanity import cascading_randomization, plot_sanity_check, rank_correlation
from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.models import load_model, preprocessing_for


def test_rank_correlation_against_known_cases():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a * 10 + 3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros(4)) == 0.0
    # ties share their average rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    assert rank_correlation([1, 1, 2, 3], a) == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4],
                                                                          [1, 2, 3, 4])[0, 1])


def edges(model, images, **options):
    """A model-free 'method': horizontal differences of the input."""
    return types.SimpleNamespace(maps=np.abs(np.diff(images[..., 0], axis=1, prepend=0)))


def guard_assignments(monkeypatch, variables):
    """Make any assignment to `variables` fail the test, whatever route it takes."""
    watched = {id(variable) for variable in variables}
    for name in ("assign", "assign_add", "assign_sub"):
        cls = type(variables[0])
        original = getattr(cls, name)

        def guarded(self, *args, _original=original, _name=name, **kwargs):
            if id(self) in watched:
                raise AssertionError(f"{_name} on the caller's variable {self.path}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, guarded)


def test_faithful_maps_change_model_free_maps_do_not_and_the_model_is_only_read(monkeypatch):
    model = load_model("demo")  # its own copy: the check must not touch it anyway
    images, _ = demo_images()
    x = preprocessing_for(model)(images[::100][:3])
    variables = list(model.weights)
    weights = [w.numpy().copy() for w in variables]
    guard_assignments(monkeypatch, variables)
    monkeypatch.setitem(METHODS, "edges", edges)
    result = cascading_randomization(model, x, ["saliency", "grad-cam", "edges"],
                                     progress=False)
    assert result.layers == ["predictions", "fc1", "block3_conv1", "block2_conv2",
                             "block2_conv1", "block1_conv2", "block1_conv1"]
    by_method = dict(zip(result.methods, result.correlations))
    assert by_method["saliency"][-1] < 0.5 and by_method["grad-cam"][-1] < 0.5
    np.testing.assert_allclose(by_method["edges"], 1.0)
    assert list(model.weights) == variables  # the same variable objects, holding ...
    for old, variable in zip(weights, variables):
        np.testing.assert_array_equal(old, variable.numpy())  # ... bitwise the same values
    top = model(x).numpy().argmax(axis=1)
    np.testing.assert_array_equal(result.classes, top)
    figure = plot_sanity_check(result)
    np.testing.assert_allclose(figure.axes[0].lines[0].get_ydata(), by_method["saliency"])


def test_classes_are_chosen_once_on_the_intact_model(demo):
    images, _ = demo_images()
    boot = load_image(images[0], demo)
    result = cascading_randomization(demo, boot, ["grad-cam"], classes="bag",
                                     score="probability", layers=["fc1"], progress=False)
    assert result.classes.tolist() == [8] and result.class_labels == ["bag"]
    assert result.score == "probability" and result.names == ["array"]
    assert "bag, probability" in plot_sanity_check(result).axes[0].get_title()


def test_checkpoints_and_bad_input(demo):
    images, _ = demo_images()
    x = preprocessing_for(demo)(images[:1])
    result = cascading_randomization(demo, x, ["saliency"], classes=0,
                                     layers=["block2_conv1", "fc1"], progress=False)
    assert result.layers == ["fc1", "block2_conv1"] and result.correlations.shape == (1, 2)
    with pytest.raises(KvisError, match="'block1_pool' has no kernel to randomize"):
        cascading_randomization(demo, x, ["saliency"], layers=["block1_pool"], progress=False)
    with pytest.raises(KvisError, match="unknown attention method 'gradcam'; choose from "
                                        "grad-cam, grad-cam\\+\\+"):
        cascading_randomization(demo, x, ["saliency", "gradcam"], progress=False)


def test_separable_convolutions_are_randomized_in_both_kernels():
    from kvis.attribution.sanity import _reinitialize, _weighted_layers

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depth")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    assert _weighted_layers(model) == ["head", "depth", "sep"]
    layer = model.get_layer("sep")
    before = [np.array(layer.depthwise_kernel), np.array(layer.pointwise_kernel)]
    _reinitialize(layer, np.random.default_rng(0))
    after = [np.array(layer.depthwise_kernel), np.array(layer.pointwise_kernel)]
    assert all(not np.allclose(b, a) for b, a in zip(before, after))
