import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_cnn

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.layers.filters import conv_filters, plot_filters
from kvis.plot.figures import NotebookFigure
from kvis.training.tensorboard import TensorBoardImages, render, write_images

pytestmark = pytest.mark.slow  # fit runs


def _data():
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32),
            rng.integers(0, 3, 8))


def _model():
    model = tiny_cnn()
    configure_model(model, preprocessing="unit")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def _summaries(log_dir):
    """`{(tag, step): (width, height, [png bytes])}` from the event files of the images run."""
    found = {}
    for path in sorted((log_dir / "images").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "images"
                tensor = tf.make_ndarray(value.tensor)
                found[value.tag, event.step] = (int(tensor[0]), int(tensor[1]), list(tensor[2:]))
    return found


def _decode(png):
    return tf.io.decode_png(png).numpy()


def test_views_are_written_at_every_epoch(tmp_path):
    model = _model()
    x, y = _data()
    callback = TensorBoardImages(x[:2], log_dir=tmp_path, filter_layers=["conv1", "conv2"],
                                 feature_map_layers="conv2", grad_cam=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no view may fail
        model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    found = _summaries(tmp_path)
    tags = {"filters/conv1", "filters/conv2", "feature_maps/conv2", "grad_cam"}
    assert set(found) == {(tag, step) for tag in tags for step in (1, 2)}
    counts = {tag: len(found[tag, 1][2]) for tag in tags}
    assert counts == {"filters/conv1": 1, "filters/conv2": 1, "feature_maps/conv2": 2,
                      "grad_cam": 1}
    for (tag, step), (width, height, pngs) in found.items():
        for png in pngs:
            pixels = _decode(png)
            assert pixels.shape == (height, width, 3), (tag, step)
            assert pixels.std() > 10, (tag, step)  # a drawing, not a blank canvas
    # The last epoch's filter image is the figure of the trained kernel, pixel for pixel.
    expected = render(plot_filters(conv_filters(model, "conv1")))
    np.testing.assert_array_equal(_decode(found["filters/conv1", 2][2][0]), expected)


def test_only_the_chosen_epochs_are_drawn(tmp_path):
    model = _model()
    x, y = _data()
    callback = TensorBoardImages(x[:3], log_dir=tmp_path, epochs=[2],
                                 feature_map_layers="conv1", grad_cam=False, count=2)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
    found = _summaries(tmp_path)
    assert set(found) == {("feature_maps/conv1", 2)}
    assert len(found["feature_maps/conv1", 2][2]) == 2  # count=2 of the 3 images


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


@pytest.mark.parametrize("options, message", [
    ({"filter_layers": "nope"}, "no layer 'nope'"),
    ({"filter_layers": "pool1"}, "no 2-D convolution kernel"),
    ({"feature_map_layers": "gap"}, "needs a spatial layer"),
    ({"grad_cam": "predictions"}, "needs a spatial layer"),
    ({"epochs": [0, 1]}, "epochs are 1-based"),
    ({"epochs": [1, 40]}, r"epochs \[40\] lie past the run of 2"),
    ({"count": 0}, "count must be a whole number"),
    ({"log_dir": "file"}, "cannot write to log_dir"),
])
def test_bad_input_stops_fit_before_the_first_epoch(tmp_path, options, message):
    model = _model()
    x, y = _data()
    (tmp_path / "file").write_text("not a folder")
    options = {"log_dir": tmp_path / "logs", **options}
    if options["log_dir"] == "file":
        options["log_dir"] = tmp_path / "file"
    weights = [w.copy() for w in model.get_weights()]
    epochs = _Epochs()
    with pytest.raises(KvisError, match=message):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[TensorBoardImages(x[:1], **options),
                                                         epochs])
    assert epochs.seen == []
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # no training step ran


def test_images_that_do_not_fit_the_model_are_refused_at_train_begin(tmp_path):
    model = _model()
    x, y = _data()
    with pytest.raises(KvisError):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[TensorBoardImages(
            np.zeros((1, 8, 8, 3), np.float32), log_dir=tmp_path)])


def test_a_failing_view_warns_and_training_goes_on(tmp_path, monkeypatch):
    import kvis.training.tensorboard as module

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(module, "plot_filters", broken)
    model = _model()
    x, y = _data()
    callback = TensorBoardImages(x[:2], log_dir=tmp_path, filter_layers="conv1", grad_cam=True)
    with pytest.warns(RuntimeWarning) as caught:
        history = model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
    assert history.epoch == [0, 1, 2]
    messages = [str(w.message) for w in caught if "TensorBoardImages" in str(w.message)]
    assert messages == [f"TensorBoardImages: drawing filters/conv1 at epoch {e} failed "
                        f"(RuntimeError: boom); training goes on" for e in (1, 2, 3)]
    assert set(_summaries(tmp_path)) == {("grad_cam", e) for e in (1, 2, 3)}


def test_write_images_round_trips_the_pixels(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    with tf.summary.create_file_writer(str(tmp_path / "images")).as_default():
        assert write_images("random", pixels, step=4, count=2)
    found = _summaries(tmp_path)
    width, height, pngs = found["random", 4]
    assert (width, height, len(pngs)) == (7, 5, 2)
    for i, png in enumerate(pngs):
        np.testing.assert_array_equal(_decode(png), pixels[i])


def test_render_gives_the_figure_size_in_pixels():
    fig = NotebookFigure(figsize=(2, 1), dpi=50)
    fig.patch.set_facecolor((1.0, 0.0, 0.0))
    pixels = render(fig)
    assert pixels.shape == (50, 100, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels.reshape(-1, 3)[0], [255, 0, 0])


def test_a_nested_base_by_path_and_loaded_images(tmp_path):
    from conftest import nested_functional, tiny_base

    from kvis.core.images import load_image

    model = nested_functional(tiny_base())
    configure_model(model, preprocessing="unit")
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    pixels = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    callback = TensorBoardImages([load_image(pixels, model)], log_dir=tmp_path,
                                 filter_layers="base/conv1", feature_map_layers="conv2")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    found = _summaries(tmp_path)
    assert set(found) == {("filters/base/conv1", 1), ("feature_maps/base/conv2", 1),
                          ("grad_cam", 1)}
    # Grad-CAM's figure shows the loaded image's own pixels: the tile is not blank.
    assert _decode(found["grad_cam", 1][2][0]).std() > 10


def test_tensorboard_itself_reads_the_images(tmp_path):
    """What `tensorboard --logdir` loads: the event accumulator finds image-plugin summaries,
    and they are exactly what `tf.summary.image` writes (it needs TensorBoard installed)."""
    accumulator_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        TensorBoardImages(x[:2], log_dir=tmp_path, filter_layers="conv1", grad_cam=True)])
    accumulator = accumulator_module.EventAccumulator(str(tmp_path / "images"))
    accumulator.Reload()
    assert set(accumulator.Tags()["tensors"]) == {"filters/conv1", "grad_cam"}
    assert accumulator.SummaryMetadata("grad_cam").plugin_data.plugin_name == "images"
    events = accumulator.Tensors("grad_cam")
    assert [event.step for event in events] == [1, 2]
    ours = tf.make_ndarray(events[-1].tensor_proto)
    with tf.summary.create_file_writer(str(tmp_path / "stock")).as_default():
        tf.summary.image("grad_cam", _decode(ours[2])[None], step=2)
    stock = accumulator_module.EventAccumulator(str(tmp_path / "stock"))
    stock.Reload()
    np.testing.assert_array_equal(tf.make_ndarray(stock.Tensors("grad_cam")[0].tensor_proto)[:2],
                                  ours[:2])  # the same width and height strings
    np.testing.assert_array_equal(_decode(tf.make_ndarray(
        stock.Tensors("grad_cam")[0].tensor_proto)[2]), _decode(ours[2]))


def test_fit_under_a_distribution_strategy_scope(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _model()
    x, y = _data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model.fit(data, epochs=1, verbose=0, callbacks=[
        TensorBoardImages(x[:2], log_dir=tmp_path, filter_layers="conv1", grad_cam=True)])
    assert set(_summaries(tmp_path)) == {("filters/conv1", 1), ("grad_cam", 1)}
