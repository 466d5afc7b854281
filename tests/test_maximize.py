import dataclasses

import numpy as np
import pytest

from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.models import preprocessing_for
from kvis.layers.feature_maps import feature_maps
from kvis.synthesis.maximize import maximize, maximize_classes, maximize_filters, plot_synthesis
from kvis.synthesis.objectives import channel
from kvis.synthesis.render import default_settings


@pytest.mark.slow
def test_synthesized_images_beat_every_real_image_on_most_filters(demo):
    """At least 90% of block2_conv2's filters respond more to their image than to any of
    the 400 real test images that ship with kvis (measured independently)."""
    result = maximize_filters(demo, "block2_conv2", progress=False)
    images, _ = demo_images()
    real = feature_maps(demo, preprocessing_for(demo)(images), "block2_conv2",
                        progress=False)["block2_conv2"]
    best_real = real.mean(axis=(1, 2)).max(axis=0)
    synthesized = feature_maps(demo, preprocessing_for(demo)(result.images * 255),
                               "block2_conv2", progress=False)["block2_conv2"]
    own = synthesized.mean(axis=(1, 2))[np.arange(64), np.arange(64)]
    np.testing.assert_allclose(own, result.scores, rtol=1e-4, atol=1e-5)
    assert np.mean(own > best_real) >= 0.9


def test_batched_equals_one_at_a_time(demo):
    settings = default_settings(demo, steps=48)
    batch = maximize_filters(demo, "block2_conv2", [3, 7, 11, 30], settings=settings,
                             progress=False, seed=5)
    alone = maximize_filters(demo, "block2_conv2", [11], settings=settings, progress=False,
                             seed=5)
    assert batch.units == ["#3", "#7", "#11", "#30"] and alone.units == ["#11"]
    np.testing.assert_allclose(batch.images[2], alone.images[0], atol=1e-3)
    np.testing.assert_allclose(batch.scores[2], alone.scores[0], rtol=1e-3)


def test_a_second_call_for_other_channels_traces_nothing(monkeypatch):
    """The optimization step and the final scoring are compiled once per model, layer and
    batch shape; channels, seeds and the learning rate go in as tensors."""
    from conftest import tiny_cnn

    from kvis.core import runner
    from kvis.core.models import configure_model
    from kvis.synthesis import render

    passes = []

    def recorded(model, key, build):
        passes.append(runner.compiled(model, key, build))
        return passes[-1]

    monkeypatch.setattr(render, "compiled", recorded)
    model = configure_model(tiny_cnn(), preprocessing="unit")
    settings = default_settings(model, steps=12, chunk=8)
    maximize_filters(model, "conv2", [0, 1], settings=settings, progress=False)
    traced = {id(f): f for f in passes}
    assert len(traced) == 2 and [f.experimental_get_tracing_count() for f in traced.values()] \
        == [1, 1]
    faster = settings.replace(learning_rate=0.1)
    second = maximize_filters(model, "conv2", [4, 3], settings=faster, seed=9, progress=False)
    assert {id(f) for f in passes} == set(traced)
    assert [f.experimental_get_tracing_count() for f in traced.values()] == [1, 1]
    # The cached passes read the channels, seeds and learning rate of this call: the same
    # images as on a fresh model that never traced anything.
    fresh = maximize_filters(configure_model(tiny_cnn(), preprocessing="unit"), "conv2",
                             [4, 3], settings=faster, seed=9, progress=False)
    np.testing.assert_allclose(second.images, fresh.images, atol=1e-6)
    np.testing.assert_allclose(second.scores, fresh.scores, rtol=1e-5)


def test_the_cached_passes_do_not_keep_a_model_alive():
    import gc
    import weakref

    from conftest import tiny_cnn

    from kvis.core.models import configure_model

    model = configure_model(tiny_cnn("short_lived"), preprocessing="unit")
    maximize_filters(model, "conv2", [0], settings=default_settings(model, steps=2),
                     progress=False)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_batches_split_large_layers(demo):
    settings = default_settings(demo, steps=8)
    result = maximize_filters(demo, "block1_conv1", range(5), batch_size=2, settings=settings,
                              progress=False)
    assert result.images.shape == (5, 28, 28, 1) and result.history.shape == (1, 5)


def test_classes_by_index_or_name(demo):
    settings = default_settings(demo, steps=32)
    result = maximize_classes(demo, [5, "bag"], settings=settings, progress=False)
    assert result.units == ["sandal", "bag"] and result.title == "classes sandal, bag"
    probabilities = demo.predict(preprocessing_for(demo)(result.images * 255), verbose=0)
    assert probabilities[0].argmax() == 5 and probabilities[1].argmax() == 8
    with pytest.raises(KvisError, match="unknown class 'sandals'.*closest: sandal"):
        maximize_classes(demo, ["sandals"])
    with pytest.raises(KvisError, match=r"class index 10 is out of range \(0-9\)"):
        maximize_classes(demo, [10])


def test_any_objective_and_the_grid_figure(tiny):
    from kvis.core.models import configure_model
    from kvis.plot.figures import NotebookFigure

    configure_model(tiny, preprocessing="unit")
    result = maximize(tiny, channel("conv2", [0, 1]), count=2,
                      settings=default_settings(tiny, steps=8), progress=False)
    figure = plot_synthesis(result)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles[0] == f"#0  {result.scores[0]:.3g}"
    assert " ".join(figure._suptitle.get_text().split()) == (  # as wrapped to fit
        "channel(conv2, 2 units) (under each image: the unit, and the objective it reaches)")
    # The title says what the number under each tile measures: a mean activation, a logit.
    filters = dataclasses.replace(result, title="filters of conv2")
    classes = dataclasses.replace(result, units=["a", "b"], title="classes a, b")
    assert "mean activation it" in plot_synthesis(filters)._suptitle.get_text()
    assert plot_synthesis(classes).axes[0].get_title() == f"a  {result.scores[0]:.3g}"
    assert "the logit it" in plot_synthesis(classes)._suptitle.get_text()
    np.testing.assert_allclose(figure.axes[1].images[0].get_array(), result.images[1])
    sub = NotebookFigure().subfigures(1, 2)[0]
    assert plot_synthesis(result, fig=sub, title="mine") is sub and len(sub.axes) == 2


def test_a_non_spatial_layer_has_no_filters_to_maximize(demo):
    with pytest.raises(KvisError, match=r"a filter objective needs a spatial layer; 'fc1'"):
        maximize_filters(demo, "fc1", [0])


@pytest.mark.integration
def test_vgg16_middle_layer_and_nested_resnet50(vgg16):
    import keras

    settings = default_settings(vgg16, steps=4)
    result = maximize_filters(vgg16, "block4_conv1", [0, 511], settings=settings,
                              progress=False)
    assert result.images.shape == (2, 224, 224, 3) and np.all(np.isfinite(result.scores))
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    model = keras.Sequential([keras.Input((64, 64, 3)), base,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5, activation="softmax")])
    result = maximize_classes(model, [4], settings=default_settings(model, steps=4),
                              progress=False)
    assert result.units == ["#4"] and np.isfinite(result.scores[0])
