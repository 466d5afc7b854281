import cv2
import numpy as np
import pytest

import kvis
from kvis.attribution.attention import (
    METHODS,
    attention,
    overlay,
    plot_attention,
    sign_maps,
)
from kvis.attribution.explanation import Explanation, channel_peak, unit_maps
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


def _signed(values):
    """A hand-made saliency result of one black 2x3 image with these attributions; its two
    channels sum to `values` (Captum's reduction) while their largest |value| does not."""
    values = np.asarray(values, np.float32)[None]
    channels = np.stack([values + 3, np.full_like(values, -3)], axis=-1)
    return Explanation("saliency", unit_maps(np.abs(channels).max(axis=-1)), channels, None,
                       None, np.array([0]), ["a"], np.ones(1, np.float32), "logit",
                       np.zeros((1, 2, 3, 1), np.uint8), ["x"])


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_the_channel_peak_is_the_largest_absolute_value_over_the_channels(channels):
    values = np.random.default_rng(channels).standard_normal((2, 6, 7, channels))
    peak = channel_peak(values)
    assert peak.dtype == np.float32 and peak.shape == (2, 6, 7)
    np.testing.assert_array_equal(peak, np.abs(values.astype(np.float32)).max(axis=-1))


def test_sign_modes_are_captums_on_the_channel_sum():
    a = np.array([[-2.0, -1.0, 0.0], [0.5, 1.0, 2.0]])
    result = _signed(a)
    np.testing.assert_allclose(sign_maps(result, "absolute")[0], np.abs(a) / 2)
    np.testing.assert_allclose(sign_maps(result, "positive")[0], np.maximum(a, 0) / 2)
    np.testing.assert_allclose(sign_maps(result, "negative")[0], np.maximum(-a, 0) / 2)
    np.testing.assert_allclose(sign_maps(result, "all")[0], a / 2)
    assert sign_maps(result) is result.maps  # the default: today's maps
    with pytest.raises(KvisError, match="unknown sign 'both'; choose from absolute, positive"):
        sign_maps(result, "both")


def test_sign_colours_zero_for_the_other_sign_and_mirror_about_white():
    a = np.array([[-2.0, -1.0, 0.0], [0.5, 1.0, 2.0]])
    positive = plot_attention(_signed(a), sign="positive", alpha=1.0).axes[1]
    colours = positive.images[0].get_array()
    zero = colours[0, 2]
    assert (colours[0, 0] == zero).all() and (colours[0, 1] == zero).all()
    assert not (colours[1, 0] == zero).all()
    figure = plot_attention(_signed(a), sign="all", alpha=1.0)
    colours = figure.axes[1].images[0].get_array().astype(int)
    np.testing.assert_array_equal(colours[0, 2], [255, 255, 255])  # 0: the centre, white
    np.testing.assert_array_equal(colours[0, 0], colours[1, 2][::-1])  # -2 and 2: blue, red
    np.testing.assert_array_equal(colours[0, 1], colours[1, 1][::-1])  # -1 and 1
    assert colours[1, 2][0] > colours[1, 2][2] and colours[1, 1][1] > colours[1, 2][1]
    colorbar = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"][0]
    assert colorbar.get_ylim() == (-1.0, 1.0) and colorbar.get_ylabel() == "saliency map, signed"


def test_the_signs_of_a_cam_are_those_of_its_upsampled_raw_map(demo, boots):
    result = attention(demo, boots, "grad-cam", classes="bag", progress=False)
    raw = np.stack([cv2.resize(r, (28, 28), interpolation=cv2.INTER_LINEAR) for r in result.raw])
    assert raw.min() < 0 < raw.max()
    peaks = np.abs(raw).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(sign_maps(result, "all"), raw / peaks, atol=1e-6)
    negative = sign_maps(result, "negative")
    assert np.all(negative[raw >= 0] == 0) and negative.max() == pytest.approx(1.0)


def test_several_methods_are_drawn_side_by_side(demo, boots):
    results = [attention(demo, boots, method, classes="bag", progress=False)
               for method in ("grad-cam", "saliency")]
    figure = plot_attention(results)
    rows = np.array(figure.axes[:6]).reshape(2, 3)  # an image, then a column per method
    assert [ax.get_title() for ax in rows[0, 1:]] == ["grad-cam at block3_conv1", "saliency"]
    assert rows[1, 0].get_title().startswith("array\nbag (logit ")
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row[0].images[0].get_array(), boots[i].pixels[..., 0])
        for ax, result in zip(row[1:], results):
            np.testing.assert_array_equal(ax.images[0].get_array(),
                                          overlay(boots[i].pixels, result.maps[i]))
    assert figure._suptitle.get_text() == "grad-cam, saliency"
    assert sum(ax.get_label() == "<colorbar>" for ax in figure.axes) == 1
    assert plot_attention(results[:1])._suptitle.get_text() == "grad-cam at block3_conv1"
    with pytest.raises(KvisError, match="same images"):
        plot_attention([results[0], results[1][::-1]])
