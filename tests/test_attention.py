import cv2
import numpy as np
import pytest

import kvis
from kvis.attribution.attention import METHODS, attention, overlay, plot_attention
from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.vocabulary import ATTENTION_METHODS

# Small options so that every method runs quickly.
OPTIONS = {"smoothgrad": dict(samples=4), "integrated-gradients": dict(steps=8),
           "occlusion": dict(size=7, stride=7)}


@pytest.fixture(scope="module")
def boots(demo):
    images, labels = demo_images()
    return [load_image(images[i], demo) for i in np.flatnonzero(labels == 9)[:2]]


def test_the_registry_spells_every_name_of_the_vocabulary_once():
    assert tuple(METHODS) == ATTENTION_METHODS
    assert all(getattr(kvis, function.__name__) is function for function in METHODS.values())


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_attention_by_name_is_the_method_itself(demo, boots, method):
    options = OPTIONS.get(method, {})
    result = attention(demo, boots, method, classes="bag", score="probability",
                       progress=False, **options)
    direct = METHODS[method](demo, boots, classes="bag", score="probability", progress=False,
                             **options)
    assert result.method == method and result.score == "probability"
    assert result.maps.shape == (2, 28, 28) and list(result.classes) == [8, 8]
    assert result.class_labels == ["bag", "bag"]
    assert result.maps.min() >= 0 and result.maps.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(result.maps, direct.maps)
    np.testing.assert_array_equal(result.scores, direct.scores)
    assert (result.layer is None) == (method not in ("grad-cam", "grad-cam++", "score-cam",
                                                     "guided-grad-cam"))


def test_unknown_methods_layers_and_options_are_refused(demo, boots):
    with pytest.raises(KvisError, match="unknown attention method 'gradcam'; choose from "
                                        "grad-cam, grad-cam\\+\\+, score-cam"):
        attention(demo, boots, "gradcam")
    with pytest.raises(KvisError, match="saliency attributes to the input pixels and takes "
                                        "no layer; the layer is for grad-cam"):
        attention(demo, boots, "saliency", layer="block3_conv1")
    with pytest.raises(KvisError, match="smoothgrad has no option 'steps'; its options: "
                                        "samples, noise, seed"):
        attention(demo, boots, "smoothgrad", steps=3)
    with pytest.raises(KvisError, match="grad-cam needs a spatial layer; 'fc1'"):
        attention(demo, boots, "grad-cam", layer="fc1")


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


def test_the_figure_needs_only_the_result(demo, boots):
    result = attention(demo, boots, "grad-cam", classes=["ankle boot", 8], progress=False)
    fig = plot_attention(result)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0::2] == ["array", "array"]
    assert titles[1].startswith("ankle boot (logit ") and titles[3].startswith("bag (logit ")
    assert fig._suptitle.get_text() == "grad-cam at block3_conv1"
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), boots[0].pixels[..., 0])
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(),
                                  overlay(boots[1].pixels, result.maps[1]))
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and colorbars[0].get_ylim() == (0.0, 1.0)
    one = plot_attention(result[0])
    assert one._suptitle.get_text() == "array: grad-cam at block3_conv1 for ankle boot"
    assert any(ax.get_label() == "<colorbar>" for ax in one.axes)


def test_a_figure_draws_into_a_given_subfigure(demo, boots):
    from matplotlib.figure import Figure

    result = attention(demo, boots[:1], "saliency", progress=False)
    parent = Figure()
    left, right = parent.subfigures(1, 2)
    assert plot_attention(result, fig=right, title="saliency") is right
    assert right._suptitle.get_text() == "saliency" and not left.axes
