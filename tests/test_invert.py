import numpy as np
import pytest

from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.synthesis.invert import invert, plot_inversion

LAYERS = ["block1_conv1", "block2_conv2", "block3_conv1", "block3_pool"]


@pytest.fixture(scope="module")
def boot_inversion(demo):
    images, labels = demo_images()
    boot = load_image(images[np.flatnonzero(labels == 9)[0]], demo)
    return invert(demo, boot, LAYERS, progress=False)


def test_first_block_reconstructs_the_image_closely(boot_inversion):
    assert boot_inversion.errors[0] < 0.005
    assert boot_inversion.pixel_errors[0] < 0.01


def test_the_reconstruction_drifts_from_the_image_with_depth(boot_inversion):
    assert np.all(np.diff(boot_inversion.pixel_errors) > 0)
    assert boot_inversion.pixel_errors[-1] > 0.2


def test_errors_are_measured_independently(boot_inversion, demo):
    from kvis.core.models import preprocessing_for
    from kvis.layers.feature_maps import feature_maps

    x = preprocessing_for(demo)(boot_inversion.pixels)
    target = feature_maps(demo, x, "block2_conv2", progress=False)["block2_conv2"]
    reached = feature_maps(demo, preprocessing_for(demo)(boot_inversion.images[1:2] * 255),
                           "block2_conv2", progress=False)["block2_conv2"]
    expected = np.sum((reached - target) ** 2) / np.sum(target ** 2)
    assert boot_inversion.errors[1] == pytest.approx(expected, rel=1e-3)


def test_figure_shows_the_original_and_labels_each_layer(boot_inversion):
    figure = plot_inversion(boot_inversion)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == "original" and titles[1].startswith("block1_conv1\nerror ")
    np.testing.assert_array_equal(figure.axes[0].images[0].get_array(),
                                  boot_inversion.pixels[0, ..., 0] / 255.0)
    assert figure._suptitle.get_text() == "array reconstructed from each layer"


def test_an_array_gives_the_same_target_and_original(demo):
    from kvis.synthesis.render import Settings

    images, _ = demo_images()
    image = load_image(images[3], demo)
    quick = Settings(parameterization="pixel", steps=4, jitter=0, scale=0.0, rotate=0.0)
    from_image = invert(demo, image, "block2_conv2", settings=quick, progress=False)
    from_array = invert(demo, image.x, ["block2_conv2"], settings=quick, progress=False)
    np.testing.assert_array_equal(from_image.images, from_array.images)
    np.testing.assert_array_equal(from_image.errors, from_array.errors)
    np.testing.assert_array_equal(from_array.pixels[0], image.pixels)


def test_a_second_image_traces_nothing(demo, monkeypatch):
    """The representation pass, the optimization step and the final scoring are compiled once
    per model, layers and shape; the targets go in as tensors."""
    from kvis.core import runner
    from kvis.core.models import load_model
    from kvis.synthesis import invert as inversion
    from kvis.synthesis import render
    from kvis.synthesis.render import Settings

    passes = []

    def recorded(model, key, build):
        passes.append(runner.compiled(model, key, build))
        return passes[-1]

    monkeypatch.setattr(render, "compiled", recorded)
    monkeypatch.setattr(inversion, "compiled", recorded)
    images, _ = demo_images()
    quick = Settings(parameterization="pixel", steps=4, jitter=0, scale=0.0, rotate=0.0)
    layers = ["block1_conv2", "fc1"]
    invert(demo, load_image(images[5], demo), layers, settings=quick, progress=False)
    traced = {id(f): (f, f.experimental_get_tracing_count()) for f in passes}
    assert len(traced) == 3
    second = invert(demo, load_image(images[6], demo), layers, settings=quick, progress=False)
    assert {id(f) for f in passes} == set(traced)
    assert all(f.experimental_get_tracing_count() == count for f, count in traced.values())
    fresh = load_model("demo")  # a model that never traced anything gives the same numbers
    again = invert(fresh, load_image(images[6], fresh), layers, settings=quick, progress=False)
    np.testing.assert_allclose(second.images, again.images, atol=1e-6)
    np.testing.assert_allclose(second.errors, again.errors, rtol=1e-5)


def test_unknown_layer_and_several_images_are_refused(demo):
    images, _ = demo_images()
    with pytest.raises(KvisError, match="no layer 'block4_conv1'.*closest: block"):
        invert(demo, load_image(images[0], demo), ["block4_conv1"], progress=False)
    pair = [load_image(images[0], demo), load_image(images[1], demo)]
    with pytest.raises(KvisError, match="reconstructs one image; got 2"):
        invert(demo, pair, ["block1_conv1"], progress=False)
