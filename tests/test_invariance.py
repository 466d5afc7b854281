import cv2
import keras
import numpy as np
import pytest

from kvis.analyses.invariance import (
    default_values,
    invariance,
    plot_invariance,
    transform_image,
)
from kvis.core.demo import CLASS_NAMES, demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.models import configure_model, mean_pixel

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def tiny(tiny):
    """The tiny CNN, fed raw pixels."""
    return configure_model(tiny, preprocessing="none")


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def tiny_logits():
    """The tiny CNN's architecture without the final softmax: the output is logits."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="tiny_logits")
    return configure_model(model, preprocessing="none")


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference(model, layers, images, transform, values, scale=1.0):
    """Distances and model outputs with a plain Keras sub-model, image by image, on pixels
    divided by `scale` (the model's preprocessing); and the top class of each original."""
    sub = keras.Model(model.input, [model.get_layer(p).output for p in layers] + [model.output])
    fill = mean_pixel(model)
    distances = np.zeros((len(layers), len(images), len(values)))
    outputs = []
    for n, image in enumerate(images):
        moved = np.stack([transform_image(image.pixels, transform, v, fill=fill)
                          for v in values]).astype(np.float32) / scale
        outs = [np.asarray(o) for o in sub(
            np.concatenate([image.pixels[None].astype(np.float32) / scale, moved]),
            training=False)]
        for i in range(len(layers)):
            change = (outs[i][1:] - outs[i][:1]).reshape(len(values), -1)
            distances[i, n] = np.linalg.norm(change, axis=1)
        outputs.append(outs[-1][1:])
    return distances, np.stack(outputs), np.asarray(model(
        np.stack([image.x[0] for image in images]))).argmax(axis=-1)


@pytest.mark.parametrize("transform, value", [("translate", 0), ("scale", 1.0),
                                              ("rotate", 0), ("rotate", 360)])
def test_identity_returns_the_image_unchanged(transform, value):
    pixels = random_pixels((7, 9, 3))
    moved = transform_image(pixels, transform, value, fill=(1, 2, 3))
    assert moved.dtype == np.uint8 and np.array_equal(moved, pixels)


def test_translate_moves_rows_and_fills_the_uncovered_rows():
    pixels = random_pixels((7, 9, 3))
    down = transform_image(pixels, "translate", 2, fill=(10, 20, 30))
    np.testing.assert_array_equal(down[2:], pixels[:-2])
    np.testing.assert_array_equal(down[:2], np.broadcast_to([10, 20, 30], (2, 9, 3)))
    up = transform_image(pixels, "translate", -3, fill=(10, 20, 30))
    np.testing.assert_array_equal(up[:-3], pixels[3:])
    np.testing.assert_array_equal(up[-3:], np.broadcast_to([10, 20, 30], (3, 9, 3)))


def test_scale_two_shows_the_central_half():
    # Columns 0, 40, 80, 120; zoomed 2x about x = 1.5 the output samples x = 0.75 ... 2.25.
    ramp = np.tile(np.uint8([0, 40, 80, 120]), (4, 1))[..., None]
    zoomed = transform_image(ramp, "scale", 2.0, fill=0)
    np.testing.assert_array_equal(zoomed[..., 0], np.tile(np.uint8([30, 50, 70, 90]), (4, 1)))
    checker = np.repeat((np.indices((4, 4)).sum(axis=0) % 2 * 200 + 20)[..., None], 3, axis=2)
    checker = checker.astype(np.uint8)
    centre = cv2.resize(checker, (8, 8), interpolation=cv2.INTER_LINEAR)[2:6, 2:6]
    zoomed = transform_image(checker, "scale", 2.0, fill=0)
    assert np.abs(zoomed.astype(int) - centre).max() <= 1


def test_rotate_turns_about_the_centre():
    odd = random_pixels((7, 5, 3))
    np.testing.assert_array_equal(transform_image(odd, "rotate", 180, fill=0),
                                  np.rot90(odd, 2))
    square = random_pixels((6, 6, 3), seed=1)
    np.testing.assert_array_equal(transform_image(square, "rotate", 90, fill=0),
                                  np.rot90(square, 1))  # counter-clockwise


def test_single_channel_images_keep_their_channel_axis():
    pixels = random_pixels((6, 6, 1))
    for transform, value in [("translate", 1), ("scale", 1.5), ("rotate", 30)]:
        assert transform_image(pixels, transform, value, fill=5).shape == (6, 6, 1)
    down = transform_image(pixels, "translate", 1, fill=5)
    np.testing.assert_array_equal(down[1:], pixels[:-1])
    assert np.all(down[0] == 5)


def test_default_values_follow_the_paper():
    np.testing.assert_array_equal(default_values("translate", (224, 224)),
                                  np.arange(-60, 61, 10))
    for height in (16, 28):
        shifts = default_values("translate", height)
        assert 0 in shifts and shifts[0] == -shifts[-1] and np.all(np.diff(shifts) > 0)
    np.testing.assert_allclose(default_values("scale", 224), np.linspace(1, 1.8, 9))
    np.testing.assert_array_equal(default_values("rotate", 224), np.arange(0, 361, 30))


def test_distances_and_probabilities_equal_an_independent_computation(tiny):
    images = [load_image(random_pixels((16, 16, 3), seed), tiny) for seed in (1, 2)]
    result = invariance(tiny, images, batch_size=5, progress=False)
    values = default_values("translate", 16)
    np.testing.assert_array_equal(result.values, values)
    assert result.layers == ("conv1", "gap") and result.score == "probability"
    assert result.distances.shape == (2, 2, len(values))
    assert result.scores.shape == (2, len(values))
    zero = np.flatnonzero(values == 0)[0]
    assert np.all(result.distances[:, :, zero] == 0)
    assert np.all(np.delete(result.distances, zero, axis=2) > 0)
    distances, probabilities, top = reference(tiny, ["conv1", "gap"], images, "translate", values)
    np.testing.assert_array_equal(result.classes, top)
    np.testing.assert_allclose(result.distances, distances, **TOLERANCE)
    np.testing.assert_allclose(result.scores, probabilities[[0, 1], :, top], **TOLERANCE)
    np.testing.assert_array_equal(result.pixels, np.stack([image.pixels for image in images]))
    assert result.class_labels == [f"#{c}" for c in top]  # names unknown


def test_logits_or_their_softmax():
    model = tiny_logits()
    images = [load_image(random_pixels((16, 16, 3), seed), model) for seed in (3, 4, 5)]
    options = dict(transform="scale", values=[1.0, 1.5, 2.0], layers=["conv1"],
                   classes=[0, 1, 2], progress=False)
    probability = invariance(model, images, **options)
    logit = invariance(model, images, score="logit", **options)
    _, logits, _ = reference(model, ["conv1"], images, "scale", [1.0, 1.5, 2.0])
    expected = logits[np.arange(3), :, [0, 1, 2]]
    np.testing.assert_allclose(logit.scores, expected, **TOLERANCE)
    np.testing.assert_allclose(probability.scores, softmax(logits.astype(np.float64))[
        np.arange(3), :, [0, 1, 2]], **TOLERANCE)
    assert logit.score == "logit" and probability.distances.shape == (1, 3, 3)
    np.testing.assert_array_equal(logit.distances, probability.distances)


def test_a_softmax_model_gives_its_logits():
    """The tiny CNN ends in a softmax: score="logit" reads the final Dense layer's input
    times its weights, the model's own output is the probability."""
    from conftest import tiny_cnn

    model = configure_model(tiny_cnn(), preprocessing="none")
    images = [load_image(random_pixels((16, 16, 3), seed), model) for seed in (6, 7)]
    result = invariance(model, images, transform="rotate", values=[0, 90, 180],
                        score="logit", classes=1, progress=False)
    before = keras.Model(model.input, model.get_layer("predictions").input)
    kernel, bias = model.get_layer("predictions").get_weights()
    for n, image in enumerate(images):
        moved = np.stack([transform_image(image.pixels, "rotate", v, fill=mean_pixel(model))
                          for v in (0, 90, 180)]).astype(np.float32)
        logits = np.asarray(before(moved)) @ kernel + bias
        np.testing.assert_allclose(result.scores[n], logits[:, 1], rtol=1e-5, atol=1e-5)


def test_rotating_real_images_with_named_classes(demo):
    pixels, labels = demo_images()
    images = [load_image(p, demo) for p in pixels[:2]]
    names = [CLASS_NAMES[c] for c in labels[:2]]
    result = invariance(demo, images, transform="rotate", classes=names, progress=False)
    assert result.layers == ("block1_conv2", "fc1") and result.class_labels == names
    np.testing.assert_array_equal(result.classes, labels[:2])
    assert np.all(result.distances[..., [0, -1]] == 0)  # 0 and 360 degrees
    assert np.all(result.distances[..., 1:-1] > 0)
    distances, probabilities, _ = reference(demo, list(result.layers), images, "rotate",
                                            result.values, scale=255.0)
    np.testing.assert_allclose(result.distances, distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.scores, probabilities[[0, 1], :, labels[:2]], **TOLERANCE)


def test_an_array_gives_the_same_curves_as_loaded_images(demo):
    pixels, _ = demo_images()
    images = [load_image(p, demo) for p in pixels[3:6]]
    loaded = invariance(demo, images, transform="scale", progress=False, batch_size=7)
    given = invariance(demo, np.concatenate([image.x for image in images]), transform="scale",
                       progress=False, batch_size=7)
    np.testing.assert_array_equal(given.pixels, loaded.pixels)
    np.testing.assert_array_equal(given.distances, loaded.distances)
    np.testing.assert_array_equal(given.scores, loaded.scores)
    assert given.names == ["image 0", "image 1", "image 2"]


def test_batch_size_does_not_change_the_curves(tiny):
    images = [load_image(random_pixels((16, 16, 3), seed), tiny) for seed in (1, 2, 3)]
    one, many = (invariance(tiny, images, transform="rotate", batch_size=size, progress=False)
                 for size in (1, 64))
    np.testing.assert_allclose(one.distances, many.distances, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.scores, many.scores, rtol=1e-5, atol=1e-7)
    assert np.all(one.distances[..., [0, -1]] == 0)


def test_bad_input_is_refused(tiny):
    image = load_image(random_pixels((16, 16, 3)), tiny)
    with pytest.raises(KvisError, match="unknown transform 'shear'; choose from translate, "
                                        "scale, rotate"):
        invariance(tiny, [image], transform="shear")
    with pytest.raises(KvisError, match="unknown transform"):
        transform_image(image.pixels, "flip", 1, fill=0)
    with pytest.raises(KvisError, match="^unknown score 'p'; choose from logit, probability$"):
        invariance(tiny, [image], score="p")
    with pytest.raises(KvisError, match="do not fit the model input"):
        invariance(tiny, [])
    with pytest.raises(KvisError, match="no layer 'conv9' in model 'tiny'; closest: conv2, conv1"):
        invariance(tiny, [image], layers=["conv1", "conv9"])
    with pytest.raises(KvisError, match="scale factors must be positive"):
        invariance(tiny, [image], transform="scale", values=[0.0, 1.0])
    with pytest.raises(KvisError, match="2 classes given for 1 images"):
        invariance(tiny, [image], classes=[0, 1])
    from conftest import tiny_cnn

    with pytest.raises(KvisError, match="cannot tell how model 'tiny' expects its pixels"):
        invariance(tiny_cnn(), image.x)


def test_plot_draws_the_curves(tiny):
    configure_model(tiny, class_names=["a", "b", "c"])
    images = [load_image(random_pixels((16, 16, 3), seed), tiny) for seed in (1, 2)]
    result = invariance(tiny, images, values=[-2, 0, 2], progress=False)
    fig = plot_invariance(result)
    axes = fig.axes
    assert len(axes) == 3
    for ax, rows in zip(axes, [*result.distances, result.scores]):
        assert len(ax.lines) == 2
        for line, row in zip(ax.lines, rows):
            np.testing.assert_array_equal(line.get_xdata(), result.values)
            np.testing.assert_array_equal(line.get_ydata(), row)
        assert ax.get_xlabel() == "vertical shift (pixels)"
    assert axes[-1].get_title() == "probability of the true class"
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert labels == [f"array: {'abc'[c]}" for c in result.classes]
    logit = invariance(tiny, images, values=[-2, 0, 2], score="logit", progress=False)
    assert plot_invariance(logit).axes[-1].get_title() == "logit of the true class"
