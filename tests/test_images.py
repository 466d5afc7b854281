import cv2
import keras
import numpy as np
import pytest
from conftest import nested_sequential, tiny_base

from kvis.core.errors import KvisError
from kvis.core.images import ModelImage, as_images, load_image, read_image
from kvis.core.models import configure_model, preprocessing_for
from kvis.core.preprocessing import PREPROCESSING


def test_caffe_preprocessing_equals_keras_vgg16(images):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(PREPROCESSING["caffe"](pixels), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["caffe", "tf", "torch", "unit", "none"])
def test_invert_recovers_pixels(name):
    pixels = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    recovered = PREPROCESSING[name].invert(PREPROCESSING[name](pixels))
    np.testing.assert_allclose(recovered, pixels, atol=2e-4)


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


def test_a_transparent_png_loses_its_alpha_with_a_warning(tmp_path):
    pixels = np.zeros((4, 5, 4), np.uint8)
    pixels[..., 2], pixels[..., 3] = 90, 255  # blue, opaque
    pixels[0, :, 3] = 0  # the first row transparent: 5 of 20 pixels
    cv2.imwrite(str(tmp_path / "logo.png"), pixels[..., [2, 1, 0, 3]])  # OpenCV writes BGRA
    with pytest.warns(UserWarning, match=r"logo.png: alpha channel dropped \(25% of the pixels"):
        rgb = read_image(tmp_path / "logo.png")
    np.testing.assert_array_equal(rgb, pixels[..., :3])


def test_an_opaque_alpha_channel_is_dropped_without_a_word(recwarn):
    pixels = np.full((3, 3, 4), 255, np.uint8)
    np.testing.assert_array_equal(read_image(pixels), pixels[..., :3])
    assert not recwarn.list


def test_bad_inputs_give_one_clear_error(tmp_path):
    with pytest.raises(KvisError, match="image not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(KvisError, match="cannot read image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(KvisError, match=r"got shape \(1, 4, 4, 3\)"):
        read_image(np.zeros((1, 4, 4, 3)))


def test_load_image_prepares_the_model_input(tiny):
    configure_model(tiny, preprocessing="tf")
    pixels = np.random.default_rng(2).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    image = load_image(pixels, tiny)
    np.testing.assert_array_equal(image.pixels, pixels)
    np.testing.assert_allclose(image.x, pixels[None] / 127.5 - 1, rtol=1e-6, atol=1e-6)


def test_preprocessing_is_recognised_by_architecture_not_by_name(demo, vgg16):
    assert preprocessing_for(demo).name == "unit"
    assert preprocessing_for(vgg16).name == "caffe"
    renamed = tiny_base()
    renamed.name = "resnet50"  # a name alone proves nothing
    with pytest.raises(KvisError, match=r"cannot tell how model .*caffe, tf.*--preprocess"):
        preprocessing_for(nested_sequential(renamed))
    with pytest.raises(KvisError, match="unknown preprocessing"):
        configure_model(demo, preprocessing="imagenet")


def test_a_model_that_rescales_its_own_input_takes_raw_pixels():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(2, 3)(x)
    assert preprocessing_for(keras.Model(inputs, x)).name == "none"


def test_every_way_to_pass_images_gives_the_same_batch(tiny):
    configure_model(tiny, preprocessing="unit")
    rng = np.random.default_rng(3)
    loaded = [load_image(rng.integers(0, 256, (16, 16, 3)), tiny) for _ in range(2)]
    one, listed = as_images(tiny, loaded[0]), as_images(tiny, loaded)
    array = as_images(tiny, np.concatenate([image.x for image in loaded]))
    np.testing.assert_array_equal(one.x, loaded[0].x)
    np.testing.assert_array_equal(listed.x, array.x)
    np.testing.assert_array_equal(listed.pixels, array.pixels)  # pixels recovered exactly
    assert listed.names == ["array", "array"] and array.names == ["image 0", "image 1"]


def test_bad_image_input_is_one_clear_error(tiny):
    configure_model(tiny, preprocessing="unit")
    with pytest.raises(KvisError, match=r"do not fit the model input \(N, 16, 16, 3\)"):
        as_images(tiny, np.zeros((1, 8, 8, 3)))
    with pytest.raises(KvisError, match="differ in size"):
        as_images(tiny, [ModelImage("a", np.zeros((16, 16, 3), np.uint8), np.zeros((1, 16, 16, 3))),
                         ModelImage("b", np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3)))])
    with pytest.raises(KvisError, match="images must be kvis.load_image results"):
        as_images(tiny, "cat.jpg")


def test_integer_arrays_are_pixels_and_go_through_the_preprocessing(demo):
    import kvis
    from kvis.core.demo import demo_images

    images, _ = demo_images()
    image = load_image(images[0], demo)
    from_pixels = kvis.attention(demo, image.pixels[None], "grad-cam", progress=False)
    from_image = kvis.attention(demo, image, "grad-cam", progress=False)
    np.testing.assert_array_equal(from_pixels.scores, from_image.scores)
    np.testing.assert_array_equal(from_pixels.maps, from_image.maps)
    np.testing.assert_array_equal(from_pixels.pixels, image.pixels[None])
    wide = as_images(demo, image.pixels[None].astype(np.int64))
    np.testing.assert_array_equal(wide.x, image.x)
    floats = as_images(demo, image.pixels[None].astype(np.float32))  # model input, as given
    np.testing.assert_array_equal(floats.x, image.pixels[None].astype(np.float32))
    bright = np.zeros((1, 28, 28, 1), np.int32)
    bright[0, 0, 0, 0] = 300
    with pytest.raises(KvisError, match=r"integer images are pixels in \[0, 255\]; got values "
                                        r"in \[0, 300\]"):
        as_images(demo, bright)
