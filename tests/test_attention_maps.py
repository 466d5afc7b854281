import cv2
import numpy as np
import pytest

from kvis.attention_maps import METHODS, attention, guided_grad_cam, overlay, plot_attention
from kvis.attribution import saliency
from kvis.cam import grad_cam
from kvis.demo import CLASS_NAMES, demo_images
from kvis.errors import KvisError
from kvis.models import preprocessing_for


@pytest.fixture(scope="module")
def demo_x(demo):
    images, _ = demo_images()
    return preprocessing_for(demo)(images[::100])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_unit_maps_for_the_asked_class(demo, demo_x, method):
    result = attention(demo, demo_x[:2], method, classes="bag")
    assert result.maps.shape == (2, 28, 28) and list(result.classes) == [8, 8]
    assert result.maps.min() >= 0 and result.maps.max() == pytest.approx(1.0)


def test_guided_grad_cam_is_guided_backprop_weighted_by_grad_cam(demo, demo_x):
    result = guided_grad_cam(demo, demo_x)
    coarse = grad_cam(demo, demo_x)
    fine = saliency(demo, demo_x, classes=coarse.classes, guided=True)
    np.testing.assert_allclose(result.values, fine.values * coarse.maps[..., None], rtol=1e-6)


def test_unknown_method_is_refused(demo, demo_x):
    with pytest.raises(KvisError, match="unknown attention method 'cam'; choose from gradcam"):
        attention(demo, demo_x, "cam")


def test_overlay_blends_the_colormap_in_rgb():
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    zero_colour = cv2.applyColorMap(np.zeros((5, 7), np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    expected = np.round(0.6 * image + 0.4 * zero_colour.astype(np.float64)).astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, np.zeros((5, 7))), expected)
    red = overlay(np.zeros((4, 4, 3), np.uint8), np.ones((2, 2)), alpha=1.0)
    assert red.shape == (4, 4, 3) and np.all(red == [128, 0, 0])  # JET's top is dark red
    gray = image[..., :1]
    np.testing.assert_array_equal(overlay(gray, np.full((5, 7), 0.5)),
                                  overlay(np.repeat(gray, 3, axis=-1), np.full((5, 7), 0.5)))
    small = np.random.default_rng(2).uniform(0, 1, (3, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        overlay(image, small),
        overlay(image, cv2.resize(small, (7, 5), interpolation=cv2.INTER_LINEAR)))
    with pytest.raises(KvisError, match="uint8"):
        overlay(image.astype(np.float32), np.zeros((5, 7)))


def test_the_figure_pairs_each_image_with_its_overlay(demo, demo_x):
    pixels, _ = demo_images()
    result = attention(demo, demo_x[:2], "saliency", classes="ankle boot")
    fig = plot_attention(pixels[::100][:2], result, class_names=CLASS_NAMES)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles == ["image", "saliency #9 ankle boot"] * 2
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(),
                               overlay(pixels[100], result.maps[1]) / 255.0)
