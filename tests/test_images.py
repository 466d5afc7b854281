import warnings

import cv2
import keras
import numpy as np
import pytest
from conftest import nested_sequential, tiny_base

from kvis.errors import KvisError
from kvis.images import PREPROCESSING, load_image, preprocessing_for, read_image


def test_caffe_preprocessing_equals_keras_vgg16(images):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(PREPROCESSING["caffe"](pixels), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["caffe", "tf", "torch", "unit", "none"])
def test_invert_recovers_pixels(name):
    pixels = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    np.testing.assert_array_equal(PREPROCESSING[name].invert(PREPROCESSING[name](pixels)), pixels)


def test_png_is_read_as_rgb(tmp_path):
    red = np.zeros((6, 7, 3), np.uint8)
    red[..., 0] = 200
    cv2.imwrite(str(tmp_path / "red.png"), red[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "red.png"), red)


def test_grayscale_for_rgb_model_is_converted_with_a_warning():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with pytest.warns(UserWarning, match="converted to RGB"):
        rgb = read_image(gray, channels=3)
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=-1))


def test_colour_for_grayscale_model_uses_luma():
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[..., 1] = 100
    with pytest.warns(UserWarning, match="converted to grayscale"):
        gray = read_image(pixels, channels=1)
    np.testing.assert_array_equal(gray, np.full((2, 2, 1), round(0.587 * 100), np.uint8))


def test_wrong_size_is_resized_with_a_warning():
    pixels = np.full((10, 20, 3), 77, np.uint8)
    with pytest.warns(UserWarning, match="resized from 10x20 to 5x5"):
        out = read_image(pixels, size=(5, 5))
    np.testing.assert_array_equal(out, np.full((5, 5, 3), 77, np.uint8))


def test_bad_inputs_give_one_clear_error(tmp_path):
    with pytest.raises(KvisError, match="image not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(KvisError, match="cannot read image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(KvisError, match=r"got shape \(1, 4, 4, 3\)"):
        read_image(np.zeros((1, 4, 4, 3)))


def test_load_image_prepares_the_model_input(tiny):
    pixels = np.random.default_rng(2).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    image = load_image(pixels, tiny, preprocessing="tf")
    np.testing.assert_array_equal(image.pixels, pixels)
    np.testing.assert_allclose(image.x, pixels[None] / 127.5 - 1, rtol=1e-6, atol=1e-6)


def test_preprocessing_is_recognised(demo):
    assert preprocessing_for(demo).name == "unit"
    base = tiny_base()
    base.name = "resnet50"
    assert preprocessing_for(nested_sequential(base)).name == "caffe"
    with pytest.warns(UserWarning, match="cannot tell"):
        assert preprocessing_for(nested_sequential(tiny_base())).name == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preprocessing_for(demo, "torch").name == "torch"
    with pytest.raises(KvisError, match="unknown preprocessing"):
        preprocessing_for(demo, "imagenet")
