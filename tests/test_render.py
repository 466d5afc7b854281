import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_cnn

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.layers.feature_maps import feature_maps
from kvis.synthesis import objectives
from kvis.synthesis.objectives import Bound, Objective
from kvis.synthesis.param import Pixels, Spectrum
from kvis.synthesis.render import Settings, default_settings, render
from kvis.synthesis.transform import blur, transform

QUICK = Settings(steps=24, jitter=1, scale=0.05, rotate=5.0, chunk=8)


@pytest.fixture
def tiny():
    """The tiny CNN, told that it takes pixels as they are, in [0, 255]."""
    return configure_model(tiny_cnn(), preprocessing="none")


def test_the_objective_rises(tiny):
    result = render(tiny, objectives.channel("conv2", [0, 1, 2]), seeds=[0, 1, 2],
                    settings=QUICK, progress=False)
    assert result.history.shape == (3, 3)
    assert np.all(result.history[-1] > result.history[0] + 0.05)
    assert result.images.shape == (3, 16, 16, 3)
    assert result.images.min() >= 0 and result.images.max() <= 1


@pytest.mark.parametrize("preprocessing", ["none", "unit", "tf"])
def test_images_reach_the_model_through_its_preprocessing(preprocessing):
    model = configure_model(tiny_cnn(), preprocessing=preprocessing)
    result = render(model, objectives.channel("conv2", [0, 3]), seeds=[0, 1],
                    settings=QUICK.replace(steps=8), progress=False)
    x = {"none": result.images * 255, "unit": result.images, "tf": result.images * 2 - 1}[
        preprocessing]
    conv2 = feature_maps(model, x, "conv2", progress=False)["conv2"].mean(axis=(1, 2))
    np.testing.assert_allclose(result.scores, [conv2[0, 0], conv2[1, 3]], rtol=1e-5, atol=1e-6)


def test_a_model_of_unknown_preprocessing_is_refused():
    with pytest.raises(KvisError, match="cannot tell how model 'tiny' expects its pixels.*"
                                        "--preprocess"):
        render(tiny_cnn(), objectives.channel("conv2", 0), seeds=[0], settings=QUICK,
               progress=False)


@pytest.mark.parametrize("parameterization", ["fft", "pixel"])
def test_same_seed_gives_the_same_image(tiny, parameterization):
    settings = QUICK.replace(parameterization=parameterization)
    first, second = (render(tiny, objectives.channel("conv2", 4), seeds=[(7, 4)],
                            settings=settings, progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.images, second.images)


def test_octaves_blur_and_gradient_normalization_still_climb(tiny):
    settings = QUICK.replace(steps=32, octaves=2, blur_every=8, normalize_gradients=True,
                             decay=0.01, tv=0.01)
    result = render(tiny, objectives.channel("conv2", 1), seeds=[0], settings=settings,
                    progress=False)
    assert result.history[-1, 0] > result.history[0, 0]


def test_identity_and_shift_transforms():
    images = tf.constant(np.random.default_rng(0).uniform(size=(2, 6, 7, 1)), tf.float32)
    identity = tf.constant([[0, 0, 1, 0], [0, 0, 1, 0]], tf.float32)
    np.testing.assert_allclose(transform(images, identity), images, atol=1e-6)
    shifted = transform(images, tf.constant([[1, 2, 1, 0], [0, -1, 1, 0]], tf.float32)).numpy()
    np.testing.assert_allclose(shifted[0, 1:, 2:], images.numpy()[0, :-1, :-2], atol=1e-5)
    np.testing.assert_allclose(shifted[1, :, :-1], images.numpy()[1, :, 1:], atol=1e-5)


@pytest.mark.parametrize("parameterization", [Spectrum, Pixels])
@pytest.mark.parametrize("channels", [1, 3])
def test_parameterizations_take_back_an_image(parameterization, channels):
    rng = np.random.default_rng(0)
    target = rng.uniform(0.1, 0.9, (2, 10, 9, channels)).astype(np.float32)
    param = parameterization((10, 9, channels))
    assert param.start([rng, rng], 0.2).shape == param.value_of(target).shape
    np.testing.assert_allclose(param.image(param.value_of(target)), target, atol=1e-4)


def test_blur_keeps_a_flat_image_and_smooths_a_spike():
    flat = tf.fill((1, 9, 9, 1), 0.3)
    np.testing.assert_allclose(blur(flat, 1.0), flat, atol=1e-6)
    spike = np.zeros((1, 9, 9, 1), np.float32)
    spike[0, 4, 4] = 1.0
    blurred = blur(tf.constant(spike), 1.0).numpy()[0, ..., 0]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred[4, 4] < 0.2
    assert blurred[4, 5] == pytest.approx(blurred[5, 4]) and blurred[4, 5] > blurred[4, 6]


def test_divergence_names_the_unit(tiny):
    exploding = Objective("exploding", lambda graph: Bound(
        ("conv1",), lambda outputs, images: tf.math.log(tf.reduce_mean(images, (1, 2, 3)) - 2.0)))
    with pytest.raises(KvisError, match="diverged .* for #5"):
        render(tiny, exploding, seeds=[0], labels=["#5"], settings=QUICK, progress=False)


def test_settings_scale_with_the_image_and_refuse_unknown_names(tiny, demo):
    assert default_settings(demo).jitter == 1 and default_settings(demo).rotate == 5.0
    assert default_settings(tiny, (224, 224)).jitter == 8
    assert default_settings(tiny, (224, 224)).rotate == 10.0
    with pytest.raises(KvisError, match="unknown settings: jiter"):
        Settings().replace(jiter=3)


def test_images_of_another_size_are_resized_for_a_fixed_input(tiny):
    result = render(tiny, objectives.channel("conv2", 0), seeds=[0], size=(24, 24),
                    settings=QUICK, progress=False)
    assert result.images.shape == (1, 24, 24, 3)


@pytest.mark.parametrize("changes, message", [
    (dict(learning_rate=0), "learning_rate must be above 0; got 0"),
    (dict(learning_rate=-1), "learning_rate must be above 0; got -1"),
    (dict(steps=0), "steps must be at least 1; got 0"),
    (dict(blur_sigma=0), "blur_sigma must be above 0; got 0"),
    (dict(jitter=-2), "jitter must be at least 0; got -2"),
])
def test_settings_out_of_range_are_refused_up_front(changes, message):
    from kvis.synthesis.render import Settings

    with pytest.raises(KvisError, match=message):
        Settings(**changes)
    with pytest.raises(KvisError, match=message):
        Settings().replace(**changes)


def test_images_that_cannot_fit_in_memory_are_refused_before_any_work(tiny, monkeypatch):
    from kvis.synthesis import render as engine

    # 16 images * 1e10 pixels * 3 channels * 4 bytes * 30 copies = 53,644 GiB
    with pytest.raises(KvisError, match=r"^16 images of 100000x100000 need about 53,644 GiB "
                                        r"to optimize; this machine has .* GiB: use a smaller "
                                        r"size \(the model's input is 16x16\)$"):
        render(tiny, objectives.channel("conv2", 0), seeds=range(16), size=(100000, 100000),
               settings=QUICK, progress=False)
    # 2 images of 64x64x3 need 2 * 64 * 64 * 3 * 4 bytes * 30 copies = 2,949,120 bytes
    monkeypatch.setattr(engine, "_physical_memory", lambda: 2_949_119)
    with pytest.raises(KvisError, match="2 images of 64x64 need about 3 MiB to optimize; "
                                        "this machine has 3 MiB"):
        render(tiny, objectives.channel("conv2", 0), seeds=[0, 1], size=(64, 64),
               settings=QUICK, progress=False)


@pytest.mark.parametrize("size, warned", [((8, 8), False), ((32, 32), False), ((33, 20), True),
                                          ((7 * 16, 7 * 16), True)])
def test_a_size_far_from_the_models_input_is_warned_about(tiny, recwarn, size, warned):
    render(tiny, objectives.channel("conv2", 0), seeds=[0], size=size,
           settings=QUICK.replace(steps=1), progress=False)
    said = [str(w.message) for w in recwarn.list if "far from the model's input" in
            str(w.message)]
    assert said == ([f"image size {size[0]}x{size[1]} is far from the model's input 16x16: "
                     "the images are resized to it every step, so the size adds time, not "
                     "detail"] if warned else [])
