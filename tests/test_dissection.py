import json
import math

import cv2
import keras
import numpy as np
import pytest

from kvis.core.errors import KvisError
from kvis.core.graph import probe
from kvis.core.io import write_image
from kvis.core.models import configure_model
from kvis.dataset.concepts import concept_dataset
from kvis.dataset.dissection import dissect, plot_dissection
from kvis.plot.figures import NotebookFigure

COLOURS = {"red": (230, 25, 25), "green": (25, 230, 25), "blue": (25, 25, 230)}


def write_concepts(folder, images, masks, concepts, suffix=".png"):
    """A concept dataset in the documented format: images/, masks/, concepts.txt."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "concepts.txt").write_text("".join(f"{name}\n" for name in concepts))
    for i, (image, mask) in enumerate(zip(images, masks)):
        write_image(folder / "images" / f"{i:03d}{suffix}", image)
        assert cv2.imwrite(str(folder / "masks" / f"{i:03d}.png"), mask.astype(np.uint8))
    return folder


def colour_patches(count, size=32, seed=0):
    """Gray noisy images with red, green and blue rectangles; masks label them 1, 2, 3.

    Rectangles sit on even rows and columns with even sides, so they fill whole cells of
    a stride-2 layer."""
    rng = np.random.default_rng(seed)
    images = np.full((count, size, size, 3), 128.0)
    masks = np.zeros((count, size, size), np.uint8)
    for i in range(count):
        for label in rng.permutation(3) + 1:
            if rng.random() < 0.8:
                height, width = 2 * rng.integers(3, 7, size=2)
                top, left = 2 * rng.integers(0, (size - height) // 2 + 1), 2 * rng.integers(
                    0, (size - width) // 2 + 1)
                images[i, top:top + height, left:left + width] = list(COLOURS.values())[
                    label - 1]
                masks[i, top:top + height, left:left + width] = label
    images += rng.normal(0, 6, images.shape)
    return np.clip(np.round(images), 0, 255).astype(np.uint8), masks


def colour_detector():
    """Units 0-2 respond to red, green, blue (a 1x1 conv on [0, 1] pixels), unit 3 to the gray
    background; a stride-2 conv then averages 2x2 cells, so maps are half the mask size."""
    inputs = keras.Input((32, 32, 3))
    colours = keras.layers.Conv2D(4, 1, activation="relu", name="colours")
    pool = keras.layers.Conv2D(4, 2, strides=2, name="units")
    model = keras.Model(inputs, pool(colours(inputs)), name="colour_detector")
    kernel = np.zeros((1, 1, 3, 4), np.float32)
    for unit in range(3):
        kernel[0, 0, :, unit] = -0.5
        kernel[0, 0, unit, unit] = 1.0
    kernel[0, 0, :, 3] = 1.0
    colours.set_weights([kernel, np.array([-0.1, -0.1, -0.1, -1.3], np.float32)])
    average = np.zeros((2, 2, 4, 4), np.float32)
    average[:, :, range(4), range(4)] = 0.25
    pool.set_weights([average, np.zeros(4, np.float32)])
    return configure_model(model, preprocessing="unit")


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    images, masks = colour_patches(60)
    return write_concepts(tmp_path_factory.mktemp("colours"), images, masks, list(COLOURS))


def test_dissection_recovers_the_planted_units(colours):
    model = colour_detector()
    data = concept_dataset(colours)
    masks = np.stack([cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in data.masks])
    coverage = np.array([(masks == c).mean() for c in (1, 2, 3)])   # about 6% each
    # A quantile just under each concept's share of the pixels: the top activations of a
    # colour unit are its colour's patches, so IoU is close to quantile / coverage.
    result = dissect(model, data, quantile=0.9 * coverage.min(), progress=False)
    assert result.layers == ("units",) and result.images == 60
    assert result.best_concepts[:3] == ("red", "green", "blue")
    assert np.all(result.best_iou[:3] > 0.5), result.best_iou
    assert result.best_iou[3] < 0.02                       # the background unit detects nothing
    assert np.all(result.iou[:3][~np.eye(3, dtype=bool)] == 0)    # no colour unit fires elsewhere
    assert result.detectors() == {"blue": 1, "green": 1, "red": 1}
    # The paper's quantile marks far fewer pixels than the concepts cover, so the IoUs are
    # small (at most 0.005 / coverage), but the pairs are the same and nothing else overlaps.
    paper = dissect(model, data, quantile=0.005, progress=False)
    assert paper.best_concepts[:3] == ("red", "green", "blue")
    assert np.all(paper.best_iou[:3] > 0) and np.all(paper.best_iou[:3] < 0.005 / coverage)
    assert np.all(paper.iou[:3][~np.eye(3, dtype=bool)] == 0) and paper.best_iou[3] == 0
    assert paper.best[3] == -1 and paper.best_concepts[3] is None   # overlaps no concept


def random_concepts(folder, count, size, seed, concepts=3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, *size, 3)).astype(np.uint8)
    blocks = rng.integers(0, concepts + 1, (count, size[0] // 4, size[1] // 4))
    masks = np.kron(blocks, np.ones((4, 4), np.int64)).astype(np.uint8)
    return write_concepts(folder, images, masks, [f"c{i}" for i in range(1, concepts + 1)])


def brute_force(model, data, layers, thresholds):
    """IoU counts one image, one unit and one concept at a time, upsampling with OpenCV."""
    sub = probe(model, layers)
    inter, union = [], []
    for layer, limit in zip(layers, thresholds):
        units = len(limit)
        i = np.zeros((units, len(data.concepts)), np.int64)
        u = np.zeros_like(i)
        for image, mask in zip(data.images, data.masks):
            x = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)[None] / 255.0
            maps = np.asarray(sub(x.astype(np.float32))[layer])[0]
            labels = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
            for k in range(units):
                up = cv2.resize(maps[..., k], labels.shape[::-1], interpolation=cv2.INTER_LINEAR)
                on = up > limit[k]
                for c in range(len(data.concepts)):
                    i[k, c] += np.sum(on & (labels == c + 1))
                    u[k, c] += np.sum(on | (labels == c + 1))
        inter.append(i)
        union.append(u)
    return np.concatenate(inter), np.concatenate(union)


def test_thresholds_and_iou_equal_a_brute_force_computation(tiny, tmp_path):
    configure_model(tiny, preprocessing="unit")
    data = concept_dataset(random_concepts(tmp_path, 10, (16, 16), seed=1))
    quantile = 0.03
    # batch_size 1: chunks of 8 images, so the streaming top-m merges across chunks.
    result = dissect(tiny, data, ["conv1", "conv2"], quantile=quantile, batch_size=1,
                     progress=False)
    x = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in data.images])
    maps = probe(tiny, ["conv1", "conv2"])((x / 255.0).astype(np.float32))
    limits = []
    for index, layer in enumerate(("conv1", "conv2")):
        values = np.asarray(maps[layer]).reshape(-1, maps[layer].shape[-1]).T
        m = math.ceil(quantile * values.shape[1])
        assert quantile * values.shape[1] % 1 != 0          # so inverted_cdf is the m-th largest
        expected = np.sort(values, axis=1)[:, -m]
        quantiles = np.quantile(values, 1 - quantile, axis=1, method="inverted_cdf")
        found = result.thresholds[result.unit_layers == index]
        np.testing.assert_array_equal(found, expected)
        np.testing.assert_array_equal(found, quantiles)
        limits.append(found)
    inter, union = brute_force(tiny, data, ["conv1", "conv2"], limits)
    np.testing.assert_array_equal(result.intersection, inter)
    np.testing.assert_array_equal(result.union, union)
    np.testing.assert_allclose(result.iou, inter / np.maximum(union, 1))
    assert result.iou.shape == (10, 3) and result.unit_names[4] == "conv2 #0"
    np.testing.assert_array_equal(result.best_iou, result.iou.max(axis=1))


def test_images_of_several_sizes_for_a_fully_convolutional_model(tmp_path):
    inputs = keras.Input((None, None, 3))
    keras.utils.set_random_seed(3)
    x = keras.layers.Conv2D(5, 3, strides=2, activation="relu", name="conv")(inputs)
    model = configure_model(keras.Model(inputs, x, name="fcn"), preprocessing="unit")
    random_concepts(tmp_path / "a", 4, (16, 16), seed=2)
    other = random_concepts(tmp_path / "b", 3, (20, 24), seed=3)
    for i, name in enumerate(("100", "101", "102")):      # one dataset, two sizes
        (other / "images" / f"00{i}.png").rename(tmp_path / "a" / "images" / f"{name}.png")
        (other / "masks" / f"00{i}.png").rename(tmp_path / "a" / "masks" / f"{name}.png")
    data = concept_dataset(tmp_path / "a")
    assert sorted(set(data.sizes)) == [(16, 16), (20, 24)]
    result = dissect(model, data, quantile=0.05, batch_size=2, progress=False)
    sub = probe(model, ["conv"])
    values = np.concatenate([np.asarray(sub(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[
        None].astype(np.float32) / 255.0)["conv"]).reshape(-1, 5) for p in data.images]).T
    expected = np.sort(values, axis=1)[:, -math.ceil(0.05 * values.shape[1])]
    np.testing.assert_array_equal(result.thresholds, expected)
    inter, union = brute_force(model, data, ["conv"], [expected])
    np.testing.assert_array_equal(result.intersection, inter)
    np.testing.assert_array_equal(result.union, union)


def test_images_are_resized_for_the_model_with_one_warning(tiny, tmp_path):
    configure_model(tiny, preprocessing="unit")
    data = concept_dataset(random_concepts(tmp_path, 5, (24, 24), seed=4))
    with pytest.warns(UserWarning) as caught:
        result = dissect(tiny, data, "conv1", progress=False)
    assert [str(w.message) for w in caught] == [
        "5 of 5 concept images resized to 16x16 (height x width) for model 'tiny'; the masks "
        "keep their size"]
    assert result.union.min() >= result.concept_pixels.min() > 0


def test_result_summaries_and_figure(colours, tmp_path):
    result = dissect(colour_detector(), colours, quantile=0.05, progress=False)
    summary = json.loads(result.to_json())
    assert [unit["concept"] for unit in summary["units"]][:3] == ["red", "green", "blue"]
    assert summary["detectors"] == result.detectors() and summary["quantile"] == 0.05
    assert summary["units"][0]["iou"] == pytest.approx(result.best_iou[0])
    assert result.detectors(cut=1.0) == {}
    figure = plot_dissection(result, count=3)
    assert isinstance(figure, NotebookFigure)
    left, right = figure.axes
    heights = [bar.get_height() for bar in left.patches]
    np.testing.assert_allclose(heights, np.sort(result.best_iou)[::-1][:3])
    assert [label.get_text() for label in right.get_yticklabels()] == list(result.detectors())
    sub = NotebookFigure().subfigures(1, 2)[1]
    assert plot_dissection(result, fig=sub, title="colours") is sub


def _break(folder, how):
    if how == "no mask":
        (folder / "masks" / "001.png").unlink()
    elif how == "no image":
        (folder / "images" / "001.png").unlink()
    elif how == "no concepts":
        (folder / "concepts.txt").unlink()
    elif how == "no masks":
        __import__("shutil").rmtree(folder / "masks")
    elif how == "label":
        cv2.imwrite(str(folder / "masks" / "001.png"), np.full((16, 16), 4, np.uint8))
    elif how == "rgb mask":
        cv2.imwrite(str(folder / "masks" / "001.png"), np.zeros((16, 16, 3), np.uint8))
    elif how == "twice":
        cv2.imwrite(str(folder / "images" / "001.jpg"), np.zeros((16, 16, 3), np.uint8))


@pytest.mark.parametrize("how, message", [
    ("no mask", "image 001.png has no mask "),
    ("no image", "mask 001.png has no image in "),
    ("no concepts", "is not a concept dataset: it has no concepts.txt (the name of concept "),
    ("no masks", "is not a concept dataset: it has no masks/ folder"),
    ("label", "has label 4, but concepts.txt names 3 concepts"),
    ("rgb mask", "is not a single-channel label map"),
    ("twice", "two files named 001 in "),
])
def test_bad_concept_datasets_are_one_line_errors(tmp_path, how, message):
    folder = random_concepts(tmp_path / "data", 3, (16, 16), seed=5)
    _break(folder, how)
    with pytest.raises(KvisError, match=None) as error:
        concept_dataset(folder)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_dissections_are_one_line_errors(tiny, tmp_path):
    configure_model(tiny, preprocessing="unit")
    folder = random_concepts(tmp_path / "data", 3, (16, 16), seed=6)
    with pytest.raises(KvisError, match="concept dataset folder not found: .*nowhere"):
        dissect(tiny, tmp_path / "nowhere")
    with pytest.raises(KvisError, match="network dissection needs a spatial layer; 'gap'"):
        dissect(tiny, folder, ["conv1", "gap"])
    for quantile in (0, 1, -0.5):
        with pytest.raises(KvisError, match="quantile must be in"):
            dissect(tiny, folder, quantile=quantile)
    write_image(folder / "images" / "001.png", np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(KvisError, match=r"image 001.png is 8x16 but its mask 001.png is 16x16"):
        dissect(tiny, folder, progress=False)
