import json

import cv2
import keras
import numpy as np
import pytest

from kvis.analyses.correspondence import (
    Correspondence,
    correspondence,
    correspondence_table,
    load_boxes,
    plot_correspondence,
    random_boxes,
    scale_box,
)
from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.models import configure_model
from kvis.plot.figures import NotebookFigure

BOXES = [(2, 3, 8, 9), (5, 5, 11, 12), (0, 0, 6, 6)]


@pytest.fixture
def tiny(tiny):
    """The tiny CNN, fed raw pixels."""
    return configure_model(tiny, preprocessing="none")


def tiny_images(model, count=3):
    rng = np.random.default_rng(7)
    return [load_image(rng.integers(0, 256, (16, 16, 3)), model) for _ in range(count)]


def numpy_delta(model, layers, images, boxes):
    """Delta, mean and std of Z&F's correspondence by hand: a plain Keras sub-model, the
    occluder painted with the mean pixel (127.5 for a model kvis does not know) in NumPy."""
    sub = keras.Model(model.input, [model.get_layer(path).output for path in layers])
    originals = np.stack([image.pixels for image in images]).astype(np.float32)
    occluded = originals.copy()
    for picture, (top, left, bottom, right) in zip(occluded, boxes):
        picture[top:bottom, left:right] = 127.5
    outputs = [np.asarray(o) for o in sub(np.concatenate([originals, occluded]))]
    count = len(images)
    scores = []
    for out in outputs:
        flat = out.reshape(2 * count, -1)
        signs = np.sign(flat[:count] - flat[count:])
        hamming = np.array([[np.mean(signs[i] != signs[j]) for j in range(count)]
                            for i in range(count)])
        pairs = hamming[np.triu_indices(count, 1)]
        scores.append((hamming.sum(), pairs.mean(), pairs.std(), pairs))
    return scores


def test_delta_mean_and_std_equal_a_numpy_computation(tiny):
    images = tiny_images(tiny)
    result = correspondence(tiny, images, BOXES, trials=4, seed=3, batch_size=4, progress=False)
    assert result.layers == ["conv2", "gap"]  # last conv layer and penultimate layer
    assert result.names == ["array"] * 3
    np.testing.assert_array_equal(result.boxes, BOXES)
    np.testing.assert_array_equal(result.pixels, np.stack([image.pixels for image in images]))
    for i, (delta, mean, std, _) in enumerate(numpy_delta(tiny, result.layers, images, BOXES)):
        np.testing.assert_allclose([result.delta[i], result.mean[i], result.std[i]],
                                   [delta, mean, std], rtol=1e-6)
    assert result.delta[0] > 0  # (gap, 6 units, happens to change alike in all 3: Delta 0)
    # the random baseline: the same computation at each trial's boxes, pairs pooled
    trials = [numpy_delta(tiny, result.layers, images, placed)
              for placed in random_boxes(BOXES, (16, 16), trials=4, seed=3)]
    for i in range(2):
        pooled = np.concatenate([trial[i][3] for trial in trials])
        np.testing.assert_allclose(
            [result.random_delta[i], result.random_mean[i], result.random_std[i]],
            [np.mean([trial[i][0] for trial in trials]), pooled.mean(), pooled.std()],
            rtol=1e-6)


def test_random_boxes_keep_the_size_and_stay_inside():
    boxes = random_boxes(BOXES, (16, 20), trials=500, seed=0)
    assert boxes.shape == (500, 3, 4) and boxes.dtype == np.int64
    given = np.array(BOXES)
    np.testing.assert_array_equal(boxes[..., 2:] - boxes[..., :2],
                                  np.broadcast_to(given[:, 2:] - given[:, :2], (500, 3, 2)))
    # uniform over every position inside the image, both ends included
    np.testing.assert_array_equal(boxes[..., 0].min(axis=0), [0, 0, 0])
    np.testing.assert_array_equal(boxes[..., 2].max(axis=0), [16, 16, 16])
    np.testing.assert_array_equal(boxes[..., 3].max(axis=0), [20, 20, 20])
    np.testing.assert_array_equal(random_boxes(BOXES, (16, 20), trials=500, seed=0), boxes)
    assert not np.array_equal(random_boxes(BOXES, (16, 20), trials=500, seed=1), boxes)


def test_the_random_comparison_is_reproducible(tiny):
    images = tiny_images(tiny)
    first, again, other = (correspondence(tiny, images, BOXES, trials=3, seed=seed,
                                          progress=False) for seed in (0, 0, 1))
    for name in ("delta", "mean", "std", "random_delta", "random_mean", "random_std"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.delta, other.delta)  # the part does not depend on it
    assert not np.array_equal(first.random_mean, other.random_mean)
    one = correspondence(tiny, images, BOXES, layers="gap", trials=3, progress=False)
    assert one.layers == ["gap"] and one.random_mean[0] == first.random_mean[1]


def test_real_images(demo):
    pixels, labels = demo_images()
    boots = [load_image(pixels[i], demo) for i in np.flatnonzero(labels == 9)[:4]]
    heel = (18, 0, 28, 10)
    result = correspondence(demo, boots, [heel] * 4, layers=["block3_conv1", "fc1"],
                            progress=False)
    # Delta sums the ordered pairs: N (N - 1) times the mean over unordered pairs
    np.testing.assert_allclose(result.delta, 12 * result.mean, rtol=1e-5)
    np.testing.assert_allclose(result.random_delta, 12 * result.random_mean, rtol=1e-5)
    assert np.all((result.mean > 0) & (result.mean < 1) & (result.std > 0))
    # the same image with the same box four times, split across batches of 3: identical
    # changes, so no sign may differ (float32 round-off must not make up signs)
    same = correspondence(demo, [boots[0]] * 4, [heel] * 4, batch_size=3,
                          layers=["block1_conv2", "block3_conv1", "fc1"], progress=False)
    assert np.all(same.delta == 0) and np.all(same.mean == 0) and np.all(same.std == 0)
    assert np.all(same.random_mean > 0)
    # an array of model input gives the same scores as the loaded images
    given = correspondence(demo, np.concatenate([boot.x for boot in boots]), [heel] * 4,
                           layers=["block3_conv1", "fc1"], progress=False)
    for name in ("delta", "mean", "std", "random_delta", "random_mean", "random_std"):
        np.testing.assert_array_equal(getattr(given, name), getattr(result, name))
    assert given.names == [f"image {i}" for i in range(4)]


def test_bad_input_is_refused(tiny):
    images = tiny_images(tiny)
    with pytest.raises(KvisError, match="^correspondence needs at least two images$"):
        correspondence(tiny, images[:1], BOXES[:1])
    with pytest.raises(KvisError, match="^2 boxes given for 3 images$"):
        correspondence(tiny, images, BOXES[:2])
    named = [load_image(image.pixels, tiny) for image in images]
    named[1] = type(named[1])("dog.png", named[1].pixels, named[1].x)
    with pytest.raises(KvisError, match=r"\(5, 5, 11, 17\) of image 'dog.png' is empty or "
                                        r"outside the 16x16 image"):
        correspondence(tiny, named, [BOXES[0], (5, 5, 11, 17), BOXES[2]])
    with pytest.raises(KvisError, match="of image 'dog.png' is empty"):
        correspondence(tiny, named, [BOXES[0], (5, 5, 5, 12), BOXES[2]])
    with pytest.raises(KvisError, match="box of image 'dog.png' must be four whole numbers"):
        correspondence(tiny, named, [BOXES[0], (5, 5, 11), BOXES[2]])
    with pytest.raises(KvisError, match="no layer 'conv7'"):
        correspondence(tiny, images, BOXES, layers=["conv7"])
    from conftest import tiny_cnn

    with pytest.raises(KvisError, match="cannot tell how model 'tiny' expects its pixels"):
        correspondence(tiny_cnn(), np.concatenate([image.x for image in images]), BOXES)


def test_load_boxes(tmp_path):
    for name in ("b.png", "a.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((30, 40, 3), np.uint8))
    boxes = tmp_path / "eyes.json"
    boxes.write_text(json.dumps({"b.png": [1, 2, 3, 4], "a.png": [5.5, 6, 7, 8]}))
    paths, found = load_boxes(boxes, tmp_path)
    assert paths == [tmp_path / "a.png", tmp_path / "b.png"]
    assert found == [(5.5, 6, 7, 8), (1, 2, 3, 4)]
    boxes.write_text(json.dumps({"b.png": [1, 2, 3, 4], "c.png": [0, 0, 2, 2],
                                 "d.png": [0, 0, 2, 2]}))
    with pytest.raises(KvisError, match=f"images of {boxes} not found in {tmp_path}: c.png, "
                                        "d.png$"):
        load_boxes(boxes, tmp_path)
    boxes.write_text(json.dumps({"a.png": [1, 2, 0, 4]}))
    with pytest.raises(KvisError, match="the box of 'a.png' must be"):
        load_boxes(boxes, tmp_path)
    with pytest.raises(KvisError, match="boxes file not found"):
        load_boxes(tmp_path / "none.json", tmp_path)


def test_scale_box():
    assert scale_box((30, 15, 60, 30), (100, 200), (100, 200)) == (15, 30, 45, 90)
    # y: 15 * 0.5 = 7.5 -> 7, 45 * 0.5 = 22.5 -> 23; x: 30 * 0.25 = 7.5 -> 7, 90 * 0.25 -> 23
    assert scale_box((30, 15, 60, 30), (100, 200), (50, 50)) == (7, 7, 23, 23)
    assert scale_box((0, 0, 300, 150), (150, 300), (224, 224)) == (0, 0, 224, 224)
    assert scale_box((10, 10, 1, 1), (1000, 1000), (10, 10)) == (0, 0, 1, 1)


def example():
    return Correspondence(["block5_conv3", "fc2"], np.float32([2.25, 7.5]),
                          np.float32([0.1125, 0.375]), np.float32([0.01, 0.02]),
                          np.float32([4.5, 7.75]), np.float32([0.225, 0.3875]),
                          np.float32([0.03, 0.04]), [f"dog{i}.jpg" for i in range(5)],
                          np.zeros((5, 4), np.int64), np.zeros((5, 8, 8, 3), np.uint8))


def test_table_has_one_row_per_layer():
    lines = correspondence_table(example()).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1  # aligned
    assert lines[0].split() == ["layer", "Delta", "part", "part", "mean", "±", "std", "Delta",
                                "random", "random", "mean", "±", "std"]
    assert lines[1].split() == ["block5_conv3", "2.250", "0.1125", "±", "0.0100", "4.500",
                                "0.2250", "±", "0.0300"]
    assert lines[2].split() == ["fc2", "7.500", "0.3750", "±", "0.0200", "7.750", "0.3875",
                                "±", "0.0400"]


def test_plot_draws_part_and_random_bars():
    result = example()
    fig = plot_correspondence(result)
    bars = [patch.get_height() for patch in fig.axes[0].patches]
    np.testing.assert_allclose(bars, [*result.mean, *result.random_mean], rtol=1e-6)
    ticks = [label.get_text() for label in fig.axes[0].get_xticklabels()]
    assert ticks == ["block5_conv3\nΔ 2.25 vs 4.50", "fc2\nΔ 7.50 vs 7.75"]
    ax = NotebookFigure().subplots(1, 2)[1]
    assert plot_correspondence(result, ax=ax, title="dogs") is ax.figure
    assert len(ax.patches) == 4 and ax.get_title() == "dogs"

