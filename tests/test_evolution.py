import keras
import numpy as np
import pytest
from conftest import tiny_cnn

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.layers.feature_maps import feature_maps
from kvis.training.evolution import FeatureEvolution, load_evolution, plot_evolution

pytestmark = pytest.mark.slow  # fit runs


@pytest.fixture
def training():
    model = configure_model(tiny_cnn(), preprocessing="unit")
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (48, 16, 16, 3)).astype(np.float32)
    y = (x[..., 0].mean(axis=(1, 2)) > 0.5).astype(np.int64)
    return model, x, y


class _Direct(keras.callbacks.Callback):
    """The strongest activation per channel over the sample, computed directly each epoch."""

    def __init__(self, sample):
        super().__init__()
        self.sample, self.peaks = sample, {}

    def on_epoch_end(self, epoch, logs=None):
        maps = feature_maps(self.model, self.sample, ["conv1", "conv2"], progress=False)
        self.peaks[epoch + 1] = {path: maps[path].max(axis=(0, 1, 2)) for path in maps}


def test_recorded_strongest_activations_equal_a_direct_computation(training, tmp_path):
    model, x, y = training
    sample = x[:20]
    evolution = FeatureEvolution(sample, ["conv1", "conv2"], channels={"conv2": [0, 3, 5]},
                                 epochs=[1, 3, 4], log_dir=tmp_path)
    direct = _Direct(sample)
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[direct, evolution])
    result = evolution.result()
    np.testing.assert_array_equal(result.epochs, [1, 3, 4])
    assert list(result.channels["conv1"]) == [0, 1, 2, 3]  # all 4, fewer than the default 6
    for e, epoch in enumerate(result.epochs):
        np.testing.assert_allclose(result.values["conv1"][e], direct.peaks[epoch]["conv1"],
                                   rtol=1e-5)
        np.testing.assert_allclose(result.values["conv2"][e],
                                   direct.peaks[epoch]["conv2"][[0, 3, 5]], rtol=1e-5)
    assert not np.allclose(result.values["conv2"][0], result.values["conv2"][-1])  # it learned
    saved = load_evolution(tmp_path)
    np.testing.assert_array_equal(saved.values["conv2"], result.values["conv2"])
    figure = plot_evolution(saved)
    assert len([ax for ax in figure.axes if ax.images]) == (4 + 3) * 3


def test_the_default_epochs_are_clipped_to_the_run_and_end_with_its_last(training):
    model, x, y = training
    evolution = FeatureEvolution(x[:8], "conv1")
    model.fit(x, y, epochs=4, verbose=0, callbacks=[evolution])
    np.testing.assert_array_equal(evolution.result().epochs, [1, 2, 4])
    chosen = FeatureEvolution(x[:8], "conv1", epochs=(1,))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[chosen])
    np.testing.assert_array_equal(chosen.result().epochs, [1, 2])


def test_a_resumed_run_continues_the_same_grid(training, tmp_path):
    model, x, y = training
    first = FeatureEvolution(x[:10], "conv2", epochs=[1, 2], log_dir=tmp_path)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[first])
    again = FeatureEvolution(x[:10], "conv2", epochs=[1, 2, 3, 4], log_dir=tmp_path)
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[again])
    np.testing.assert_array_equal(again.result().epochs, [1, 2, 3, 4])
    np.testing.assert_array_equal(again.result().values["conv2"][:2],
                                  first.result().values["conv2"])


@pytest.mark.parametrize("options, message", [
    (dict(layers="conv9"), "no layer 'conv9'"),
    (dict(layers="gap"), "needs a spatial layer; 'gap'"),
    (dict(layers="conv1", channels=[4]), "conv1 channel 4 is out of range"),
    (dict(layers="conv1", epochs=[0, 1]), "epochs are counted from 1"),
    (dict(layers="conv1", epochs=[2, 9]), "epoch 9 is past the run's 3 epochs"),
    (dict(layers="conv1", log_dir="/proc/kvis"), "cannot write /proc/kvis"),
])
def test_bad_settings_fail_at_train_begin_before_any_epoch(training, options, message):
    model, x, y = training
    layers = options.pop("layers")
    epochs_run = []
    spy = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs_run.append(1))
    with pytest.raises(KvisError, match=message):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[spy, FeatureEvolution(x[:8], layers, **options)])
    assert not epochs_run


def test_a_failure_while_recording_never_stops_training(training, monkeypatch):
    from kvis.training import evolution as module

    model, x, y = training
    monkeypatch.setattr(module, "top_examples", lambda *a, **k: 1 / 0)
    history = []
    spy = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: history.append(epoch))
    with pytest.warns(UserWarning, match="could not record epoch 1: ZeroDivisionError"):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[FeatureEvolution(x[:8], "conv1", epochs=[1, 2]), spy])
    assert history == [0, 1, 2]


def test_fit_on_a_dataset_under_a_distribution_strategy(tmp_path):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = configure_model(tiny_cnn(), preprocessing="unit")
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 1, (32, 16, 16, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, np.int64))).batch(8)
    evolution = FeatureEvolution(x[:8], "conv1", epochs=[1, 2])
    model.fit(data, epochs=2, verbose=0, callbacks=[evolution])
    direct = feature_maps(model, x[:8], "conv1", progress=False)["conv1"].max(axis=(0, 1, 2))
    np.testing.assert_allclose(evolution.result().values["conv1"][-1], direct[:4], rtol=1e-5)


def test_a_fine_tuned_sequential_model_with_a_nested_base():
    from conftest import nested_sequential, tiny_base

    model = configure_model(nested_sequential(tiny_base()), preprocessing="unit")
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.default_rng(2).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    evolution = FeatureEvolution(x, "base/conv2", channels=[1, 7], epochs=[1])
    model.fit(x, np.zeros(16, np.int64), epochs=1, verbose=0, callbacks=[evolution])
    direct = feature_maps(model, x, "base/conv2", progress=False)["base/conv2"]
    np.testing.assert_allclose(evolution.result().values["base/conv2"][0],
                               direct.max(axis=(0, 1, 2))[[1, 7]], rtol=1e-5)


def test_the_evolution_command_draws_a_saved_grid(training, tmp_path):
    from click.testing import CliRunner

    from kvis.cli import main

    model, x, y = training
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[FeatureEvolution(x[:8], "conv2", epochs=[1, 2], log_dir=tmp_path)])
    result = CliRunner().invoke(main, ["evolution", str(tmp_path), "--out",
                                       str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    assert "2 epochs (1, 2) of 6 feature maps" in result.output
    assert (tmp_path / "grid.png").stat().st_size > 1000
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["evolution", str(empty), "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 1 and "no feature evolution in" in result.output
