import dataclasses
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_dissection import random_concepts

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.dataset.concepts import concept_dataset
from kvis.dataset.dissection import dissect
from kvis.dataset.scan import scan
from kvis.microscope.survey import load_survey, save_survey, survey


@pytest.fixture
def data(tiny):
    configure_model(tiny, preprocessing="unit")
    return np.random.default_rng(5).uniform(0, 1, (37, 16, 16, 3)).astype(np.float32)


# Classes 0 and 1 with images, some unknown (-1); class 2 has none.
LABELS = np.array([0, 1, -1, 1, 0] * 7 + [1, 0])


def _maps(model, layer, x, batch_size):
    """A layer's output, computed by Keras alone at the survey's batch size (CPU kernels
    differ by batch size)."""
    sub = keras.Model(model.input, model.get_layer(layer).output)
    return np.concatenate([np.asarray(sub(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def test_the_scan_is_kvis_scan_and_the_peaks_are_every_image_maximum(tiny, data):
    found = survey(tiny, data, labels=LABELS, batch_size=8, progress=False)
    assert found.layers == ("conv1", "pool1", "conv2") and found.model == "tiny"
    reference = scan(tiny, data, found.layers, count=9, batch_size=8, progress=False)
    assert (found.scan.images, found.scan.batches, found.scan.count) == (37, 5, 9)
    for path in found.layers:
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(found.scan.top[path], field),
                                          getattr(reference.top[path], field))
        for field in ("total", "peak", "active"):
            np.testing.assert_array_equal(getattr(found.scan.stats[path], field),
                                          getattr(reference.stats[path], field))
        maps = _maps(tiny, path, data, 8)
        assert found.peaks[path].dtype == np.float32
        np.testing.assert_allclose(found.peaks[path], maps.max(axis=(1, 2)), rtol=1e-6)
        # The same pass: the peaks' maximum is the scan's.
        np.testing.assert_array_equal(found.peaks[path].max(axis=0),
                                      found.scan.stats[path].peak)
    np.testing.assert_array_equal(found.labels, LABELS)


def test_contributions_of_a_pooled_dense_head_are_weight_times_class_mean(tiny, data):
    found = survey(tiny, data, "conv2", labels=LABELS, batch_size=8, progress=False)
    weights = tiny.get_layer("predictions").kernel.numpy()             # (6, 3)
    means = _maps(tiny, "conv2", data, 8).mean(axis=(1, 2))           # (N, 6)
    expected = np.stack([weights[:, k] * means[LABELS == k].mean(axis=0) for k in (0, 1)]
                        + [np.zeros(6)])
    assert found.contributions["conv2"].shape == (3, 6)
    np.testing.assert_allclose(found.contributions["conv2"], expected, rtol=1e-4, atol=1e-6)


def test_contributions_through_a_flatten_head_equal_a_gradient_tape_loop():
    keras.utils.set_random_seed(4)
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
    flatten, hidden = keras.layers.Flatten(), keras.layers.Dense(5, activation="tanh")
    output = keras.layers.Dense(3, activation="softmax", name="predictions")
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, output(hidden(flatten(conv(inputs)))), name="flat")
    x = np.random.default_rng(1).normal(size=(11, 8, 8, 2)).astype(np.float32)
    labels = np.array([2, 0, 0, 2, 1, 2, -1, 0, 1, 1, 2])
    found = survey(model, x, "conv", labels=labels, batch_size=4, progress=False)
    sums, counts = np.zeros((3, 4)), np.zeros(3)
    for image, label in zip(x, labels):
        if label < 0:
            continue
        maps = conv(image[None])
        with tf.GradientTape() as tape:
            tape.watch(maps)
            logit = tf.matmul(hidden(flatten(maps)), output.kernel) + output.bias
            score = logit[0, label]
        gradient = tape.gradient(score, maps)
        sums[label] += np.sum(maps * gradient, axis=(0, 1, 2))
        counts[label] += 1
    np.testing.assert_allclose(found.contributions["conv"], sums / counts[:, None],
                               rtol=1e-4, atol=1e-6)


def test_without_labels_there_are_no_contributions(tiny, data):
    found = survey(tiny, data, ["pool1", "conv1"], progress=False)
    assert found.layers == ("conv1", "pool1")  # input to output order
    assert found.labels is None and found.contributions == {} and found.dissection is None


def test_a_survey_with_concepts_and_skipped_files_round_trips_exactly(tiny, data, tmp_path,
                                                                     monkeypatch):
    concepts = concept_dataset(random_concepts(tmp_path / "concepts", 6, (16, 16), seed=1))
    found = survey(tiny, data, ["conv1", "conv2"], labels=LABELS, concepts=concepts, count=4,
                   progress=False)
    reference = dissect(tiny, concepts, ["conv1", "conv2"], progress=False)
    np.testing.assert_array_equal(found.dissection.iou, reference.iou)
    assert found.dissection.best_concepts == reference.best_concepts
    found = dataclasses.replace(found, scan=dataclasses.replace(
        found.scan, skipped=[(3, "a b.png", "cannot decode")]))
    save_survey(found, tmp_path / "survey.npz")
    back = load_survey(tmp_path / "survey.npz")
    _assert_same(back, found)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concepts", "survey.npz"]
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # a zip entry would record the hour
    save_survey(back, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "survey.npz").read_bytes()


def _assert_same(a, b):
    """Dataclasses equal field by field, arrays exactly, with the same dtypes."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b)
        for field in dataclasses.fields(a):
            _assert_same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


def _one_line(match, call):
    with pytest.raises(KvisError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_bad_inputs_are_one_line_errors(tiny, data, tmp_path):
    dense = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)], name="dense_only")
    _one_line("the microscope needs a model with conv layers; 'dense_only' has none",
              lambda: survey(dense, np.zeros((2, 4, 4, 1), np.float32), progress=False))
    _one_line("the microscope needs a spatial layer; 'gap'",
              lambda: survey(tiny, data, ["conv1", "gap"], progress=False))
    _one_line("no layer 'conv9'", lambda: survey(tiny, data, "conv9", progress=False))
    _one_line("a dataset is a folder",
              lambda: survey(tiny, data[:0], progress=False))
    empty = tf.data.Dataset.from_tensor_slices(data[:0])
    _one_line("no image of tf.data.Dataset of 0 images could be read",
              lambda: survey(tiny, empty, progress=False))
    _one_line("go up to 5; model 'tiny' has 3 classes",
              lambda: survey(tiny, data, labels=np.arange(37) % 6, progress=False))
    (tmp_path / "bad.npz").write_text("not a survey")
    _one_line("cannot read survey", lambda: load_survey(tmp_path / "bad.npz"))
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    _one_line("is not a survey that this kvis reads", lambda: load_survey(tmp_path / "other.npz"))
    _one_line("cannot read survey", lambda: load_survey(tmp_path / "missing.npz"))
