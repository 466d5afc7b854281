import keras
import numpy as np
import pytest

import kvis
from kvis.attribution.occlusion import occlusion, plot_occlusion, sensitivity_map
from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.models import configure_model, mean_pixel, preprocessing_for
from kvis.plot.figures import NotebookFigure


def _brute_force(model, x, size, stride, fill, layer, channel, cls):
    """One occluded image and one model call at a time: the independent reference. The
    logits are the final Dense layer's input times its weights (no kvis code involved)."""
    final = model.layers[-1]
    probe = keras.Model(model.input, [model.get_layer(layer).output, final.input])
    kernel, bias = (np.asarray(w, np.float64) for w in final.get_weights())
    tops = range(0, x.shape[1] - size + 1, stride)
    lefts = range(0, x.shape[2] - size + 1, stride)
    feature, logit, probability, label = (np.zeros((len(tops), len(lefts))) for _ in range(4))
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            occluded = x.copy()
            occluded[0, top:top + size, left:left + size] = fill
            maps, before = (np.asarray(o)[0] for o in probe(occluded))
            logits = before.astype(np.float64) @ kernel + bias
            probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            feature[i, j] = maps[..., channel].sum()
            logit[i, j], probability[i, j] = logits[cls], probabilities[cls]
            label[i, j] = probabilities.argmax()
    return feature, logit, probability, label


def _brute_force_sensitivity(drops, tops, lefts, size, shape):
    """Captum's rule pixel by pixel: the mean drop of the squares covering the pixel."""
    total, count = np.zeros(shape), np.zeros(shape)
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            total[top:top + size, left:left + size] += drops[i, j]
            count[top:top + size, left:left + size] += 1
    return np.divide(total, count, out=np.zeros(shape), where=count > 0)


@pytest.fixture(scope="module")
def boot(demo):
    images, labels = demo_images()
    return load_image(images[np.flatnonzero(labels == 9)[0]], demo)


def test_maps_equal_a_brute_force_loop(demo, boot):
    result = occlusion(demo, boot, size=7, stride=3, progress=False)
    fill = preprocessing_for(demo)(mean_pixel(demo))
    feature, _, probability, label = _brute_force(demo, boot.x, 7, 3, fill, result.layer,
                                                  result.channel, result.class_index)
    np.testing.assert_allclose(result.feature, feature, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.scores, probability, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(result.label, label)
    assert result.layer == "block3_conv1" and result.class_index == 9
    assert result.class_label == "ankle boot" and result.score == "probability"
    assert result.feature.shape == (8, 8) and list(result.tops) == list(range(0, 22, 3))
    np.testing.assert_array_equal(result.fill, mean_pixel(demo))
    np.testing.assert_array_equal(result.pixels, boot.pixels[None])


def test_sensitivity_is_the_mean_drop_of_the_covering_squares(demo, boot):
    # stride 4 > size 3: pixels between squares and the last rows and columns stay 0
    result = occlusion(demo, boot, size=3, stride=4, progress=False)
    drops = result.unoccluded[1] - result.scores
    expected = _brute_force_sensitivity(drops, result.tops, result.lefts, 3, (28, 28))
    np.testing.assert_allclose(result.sensitivity, expected, rtol=1e-5, atol=1e-7)
    assert result.sensitivity.shape == (28, 28) and result.sensitivity.dtype == np.float32
    assert np.all(result.sensitivity[:, 3::4] == 0) and np.all(result.sensitivity[27] == 0)
    # overlapping squares (stride 2 < size 6), against the model itself, square by square
    result = occlusion(demo, boot, size=6, stride=2, progress=False)
    fill = preprocessing_for(demo)(mean_pixel(demo))
    _, _, probability, _ = _brute_force(demo, boot.x, 6, 2, fill, result.layer, result.channel,
                                        9)
    expected = _brute_force_sensitivity(result.unoccluded[1] - probability, result.tops,
                                        result.lefts, 6, (28, 28))
    np.testing.assert_allclose(result.sensitivity, expected, rtol=1e-4, atol=1e-6)
    assert result.sensitivity.max() > 0.1


@pytest.mark.parametrize("size, stride, shape", [(3, 5, (13, 11)), (4, 1, (9, 12)),
                                                 (5, 5, (10, 10)), (1, 2, (5, 7))])
def test_sensitivity_map_equals_a_loop_over_windows(size, stride, shape):
    tops = np.arange(0, shape[0] - size + 1, stride)
    lefts = np.arange(0, shape[1] - size + 1, stride)
    drops = np.random.default_rng(size).normal(size=(len(tops), len(lefts)))
    np.testing.assert_allclose(sensitivity_map(drops, tops, lefts, size, shape),
                               _brute_force_sensitivity(drops, tops, lefts, size, shape),
                               rtol=1e-5, atol=1e-6)


def test_logit_scores_are_the_pre_softmax_values(demo, boot):
    logit = occlusion(demo, boot, size=7, stride=3, score="logit", progress=False)
    probability = occlusion(demo, boot, size=7, stride=3, progress=False)
    fill = preprocessing_for(demo)(mean_pixel(demo))
    _, expected, _, _ = _brute_force(demo, boot.x, 7, 3, fill, logit.layer, logit.channel, 9)
    assert logit.score == "logit" and logit.class_index == 9
    np.testing.assert_allclose(logit.scores, expected, rtol=1e-4, atol=1e-4)
    # the same passes: the feature and label grids do not depend on the score
    np.testing.assert_array_equal(logit.label, probability.label)
    np.testing.assert_allclose(logit.feature, probability.feature, rtol=1e-6)
    assert np.any(np.abs(logit.sensitivity) > 1.0)  # logit drops, not probability drops


def test_an_array_gives_the_same_result_as_the_loaded_image(demo, boot):
    loaded = occlusion(demo, boot, size=5, stride=3, progress=False)
    for given in (boot.x, [boot]):
        result = occlusion(demo, given, size=5, stride=3, progress=False)
        for name in ("feature", "scores", "label", "sensitivity", "pixels"):
            np.testing.assert_array_equal(getattr(result, name), getattr(loaded, name))
    assert loaded.names == ["array"] and occlusion(demo, boot.x, size=27,
                                                   progress=False).names == ["image 0"]


def _region_model():
    """Class 1 is likely exactly when all 16 pixels of rows 4-7, cols 8-11 are bright:
    its logit margin is 2 * (their sum) - 31. Inputs are pixels / 255."""
    inputs = keras.Input((16, 16, 1))
    kernel = np.zeros((16, 16, 1, 1), np.float32)
    kernel[4:8, 8:12] = 1.0
    evidence = keras.layers.Conv2D(1, 16, use_bias=False, name="evidence")(inputs)
    flat = keras.layers.Flatten()(evidence)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(flat)
    model = keras.Model(inputs, outputs)
    model.get_layer("evidence").set_weights([kernel])
    model.get_layer("predictions").set_weights([np.array([[-1.0, 1.0]], np.float32),
                                                np.array([15.5, -15.5], np.float32)])
    return configure_model(model, class_names=["other", "region"], preprocessing="unit")


def test_probability_drops_exactly_where_the_region_is_covered():
    model = _region_model()
    x = np.full((1, 16, 16, 1), 1.0, np.float32)
    result = occlusion(model, x, size=4, stride=2, fill=0, classes="region", progress=False)
    covers = np.array([[top < 8 and top + 4 > 4 and left < 12 and left + 4 > 8
                        for left in result.lefts] for top in result.tops])
    assert result.unoccluded[1] == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-5)
    np.testing.assert_allclose(result.scores[~covers], result.unoccluded[1], rtol=1e-5)
    assert np.all(result.scores[covers] < 0.001)
    np.testing.assert_array_equal(result.label, np.where(covers, 0, 1))
    assert result.label_names == {0: "other", 1: "region"}
    # the fill is in pixels, through the model's preprocessing: 255 is the image itself
    same = occlusion(model, x, size=4, stride=2, fill=255, classes=1, progress=False)
    np.testing.assert_allclose(same.scores, result.unoccluded[1], rtol=1e-6)
    assert np.all(same.sensitivity == 0)
    # the logit margin drops by 2 per covered region pixel: 16 at full cover
    logit = occlusion(model, x, size=4, stride=4, fill=0, classes=1, score="logit",
                      progress=False)
    np.testing.assert_allclose(logit.scores, np.where(
        [[top == 4 and left == 8 for left in logit.lefts] for top in logit.tops], -15.5, 0.5),
        atol=1e-5)
    np.testing.assert_allclose(logit.sensitivity[4:8, 8:12], 16.0, atol=1e-5)
    assert np.all(np.delete(logit.sensitivity, np.s_[8:12], axis=1)[4:8] == 0)


def test_the_memory_budget_sets_batches_not_results(demo):
    x = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    small = occlusion(demo, x, size=5, stride=4, memory_mb=0.5, progress=False)
    large = occlusion(demo, x, size=5, stride=4, memory_mb=512, progress=False)
    given = occlusion(demo, x, size=5, stride=4, batch_size=7, progress=False)
    for other in (large, given):
        np.testing.assert_allclose(small.scores, other.scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(small.feature, other.feature, rtol=1e-5, atol=1e-4)


def test_figure_shows_the_maps_with_class_names(demo, boot):
    result = occlusion(demo, boot, size=6, stride=2, progress=False)
    figure = plot_occlusion(result)
    axes = figure.axes
    np.testing.assert_array_equal(axes[1].images[1].get_array(), result.feature)
    np.testing.assert_array_equal(axes[2].images[1].get_array(), result.scores)
    np.testing.assert_array_equal(axes[3].images[1].get_array(), result.sensitivity)
    assert axes[2].get_title() == "p(ankle boot)"
    assert [t.get_text() for t in axes[5].get_legend().get_texts()] == ["sandal", "ankle boot"]
    assert "ankle boot" in figure._suptitle.get_text() and "#" not in figure._suptitle.get_text()
    parent = NotebookFigure()
    inner = parent.subfigures(2, 1)[1]
    assert plot_occlusion(result, fig=inner, title="boot") is inner
    assert inner._suptitle.get_text() == "boot"


@pytest.mark.parametrize("options, message", [
    (dict(size=40), "occluder size 40 does not fit the 28x28 image"),
    (dict(size=-3), "occluder size must be at least 1; got -3"),
    (dict(size=0), "occluder size must be at least 1; got 0"),
    (dict(stride=0), "the occluder's stride must be at least 1; got 0"),
    (dict(fill=300), r"occluder fill must be pixel values in \[0, 255\]; got 300"),
    (dict(fill=-1.5), r"occluder fill must be pixel values in \[0, 255\]; got -1.5"),
    (dict(fill=[1, 2, 3]), r"occluder fill must be one pixel value or 1 \(one per channel\)"),
    (dict(layer="fc1"), r"occlusion needs a spatial layer; 'fc1' \(Dense\)"),
    (dict(layer="block9"), "no layer 'block9' in model"),
    (dict(classes=10), r"class index 10 is out of range \(0-9\)"),
    (dict(classes="boot"), "unknown class 'boot' for model"),
    (dict(score="softmax"), "unknown score 'softmax'; choose from logit, probability"),
])
def test_bad_input_is_one_line(demo, options, message):
    x = np.zeros((1, 28, 28, 1), np.float32)
    with pytest.raises(KvisError, match=message) as error:
        occlusion(demo, x, progress=False, **{"size": 8, **options})
    assert "\n" not in str(error.value)


def test_one_image_and_a_known_preprocessing_are_required(demo, tiny):
    with pytest.raises(KvisError, match="^occlusion maps one image; got 2 images$"):
        occlusion(demo, np.zeros((2, 28, 28, 1), np.float32), progress=False)
    with pytest.raises(KvisError, match="cannot tell how model 'tiny' expects its pixels"):
        occlusion(tiny, np.zeros((1, 16, 16, 3), np.float32), size=4, progress=False)


@pytest.mark.integration
def test_vgg16_positions(vgg16):
    x = np.random.default_rng(0).normal(0, 30, (1, 224, 224, 3)).astype(np.float32)
    result = occlusion(vgg16, x, size=64, stride=80, progress=False)
    assert result.layer == "block5_conv3" and result.feature.shape == (3, 3)
    assert np.all(np.isfinite(result.scores)) and result.sensitivity.shape == (224, 224)


def test_occlusion_as_an_attention_method_is_the_sensitivity_map(demo):
    images, labels = kvis.demo_images()
    pair = [kvis.load_image(images[i], demo) for i in (0, 1)]
    result = kvis.attention(demo, pair, "occlusion", classes=[int(labels[0]), 3], size=6,
                            stride=3, progress=False)
    for n, cls in enumerate((int(labels[0]), 3)):
        direct = occlusion(demo, pair[n], size=6, stride=3, classes=cls, score="logit",
                           progress=False)
        np.testing.assert_array_equal(result.values[n, ..., 0], direct.sensitivity)
        positive = np.maximum(direct.sensitivity, 0)
        np.testing.assert_allclose(result.maps[n], positive / positive.max(), rtol=1e-6)
        assert result.classes[n] == cls and result.scores[n] == direct.unoccluded[1]
    with pytest.raises(KvisError, match="occlusion explains a class"):
        kvis.attention(demo, pair, "occlusion", target=kvis.objectives.channel("block1_conv1", 0))


def test_cli_chooses_the_inference_and_reports_the_error(tmp_path, boot):
    from click.testing import CliRunner

    from kvis.cli.common import main

    image = tmp_path / "boot.png"
    keras.utils.save_img(image, boot.pixels)

    def run(*options):
        return CliRunner().invoke(main, ["occlusion", "demo", str(image), "--size", "4",
                                         "--stride", "3", "--out", str(tmp_path / "o.png"),
                                         *options])

    full, kept = run("--full"), run("--incremental")
    assert full.exit_code == 0 and kept.exit_code == 0, full.output + kept.output
    assert "inference: full\n" in full.output and full.output.splitlines()[0] == \
        kept.output.splitlines()[0]
    assert "inference: incremental, full maps from block2_pool (its window" in kept.output
    approximate = run("--threshold", "0.3", "--drill-down", "0.5", "--check")
    assert approximate.exit_code == 0, approximate.output
    expected = occlusion(kvis.load_model("demo"), load_image(str(image), kvis.load_model("demo")),
                         size=4, stride=3, threshold=0.3, drill_down=0.5, check=True,
                         progress=False).error
    assert "inference: approximate, full maps from flatten" in approximate.output
    assert (f"error against the exact map: max {expected[0]:.3g}, mean {expected[1]:.3g} of "
            "its range") in approximate.output
    for option, value in (("--threshold", "0"), ("--threshold", "1.5"),
                          ("--drill-down", "-1")):
        bad = run(option, value)
        assert bad.exit_code == 2 and f"Invalid value for '{option}'" in bad.output
