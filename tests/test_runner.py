import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.runner import (
    compiled,
    floats_per_row,
    jit_compile,
    jit_compile_enabled,
    rows_within,
    run_batches,
)


def test_batches_are_equal_sized_and_outputs_concatenated_in_order():
    sizes = []

    def step(x, k):
        sizes.append(int(x.shape[0]))
        return {"double": 2 * x, "plus": x + tf.cast(k, tf.float32)[:, None]}

    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    out = run_batches(step, (x, np.arange(7)), batch_size=3, progress=False)
    assert sizes == [3, 3, 3]  # the last batch is padded, its padding dropped
    np.testing.assert_array_equal(out["double"], 2 * x)
    np.testing.assert_array_equal(out["plus"], x + np.arange(7)[:, None])
    with pytest.raises(KvisError, match="batch_size must be at least 1"):
        run_batches(step, (x, np.arange(7)), batch_size=0)
    sizes.clear()
    run_batches(step, (np.zeros((16, 2), np.float32), np.arange(16)), batch_size=7,
                progress=False)
    assert sizes == [6, 6, 6]  # the fewest batches, as even as they go


def test_the_memory_budget_counts_what_a_backward_pass_keeps():
    """Per row: a rectifier's output, both sides of other nonlinear layers, nothing for
    fixed linear maps (a convolution without activation, batch normalization, an
    addition), and the largest output once more."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # linear: nothing
    b = keras.layers.BatchNormalization()(a)  # linear: nothing
    c = keras.layers.ReLU()(b)  # 256 floats kept
    d = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(c)  # 256
    e = keras.layers.Add()([c, d])  # nothing
    f = keras.layers.Conv2D(2, 1, activation="sigmoid")(e)  # fused: 2 x 128
    g = keras.layers.MaxPooling2D()(f)  # its input (counted) and 32
    h = keras.layers.Activation("tanh")(keras.layers.Flatten()(g))  # both sides: 32 + 32
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    assert floats_per_row(model) == 256 + 256 + 2 * 128 + 32 + 2 * 32 + 256
    assert rows_within(model, 1) == 2 ** 20 // (4 * floats_per_row(model))
    assert rows_within(model, 1, batch_size=5) == 5


def test_compiled_passes_are_traced_once_per_model_and_key(tiny):
    builds = []

    def build(jit):
        builds.append(1)
        return tf.function(lambda x: tiny(x), input_signature=[tf.TensorSpec((None, 16, 16, 3))],
                           jit_compile=jit)

    first = compiled(tiny, "forward", build)
    assert compiled(tiny, "forward", build) is first and len(builds) == 1
    assert compiled(tiny, "other", build) is not first and len(builds) == 2


def test_caches_do_not_keep_a_model_alive(images):
    import gc
    import weakref

    from conftest import tiny_cnn

    from kvis.attribution.cam import grad_cam
    from kvis.attribution.gradients import saliency

    model = tiny_cnn("short_lived")
    saliency(model, images, progress=False)
    grad_cam(model, images, progress=False)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_the_xla_switch_is_a_setting_and_a_context_manager():
    assert not jit_compile_enabled()
    with jit_compile():
        assert jit_compile_enabled()
        with jit_compile(False):
            assert not jit_compile_enabled()
        assert jit_compile_enabled()
    assert not jit_compile_enabled()
    try:
        jit_compile()
        assert jit_compile_enabled()
    finally:
        jit_compile(False)


def test_passes_are_cached_apart_with_and_without_xla(tiny):
    built = []

    def build(jit):
        built.append(jit)
        return tf.function(lambda x: tiny(x), input_signature=[tf.TensorSpec((None, 16, 16, 3))],
                           jit_compile=jit)

    plain = compiled(tiny, "forward", build)
    with jit_compile():
        xla = compiled(tiny, "forward", build)
        assert compiled(tiny, "forward", build) is xla
    assert xla is not plain and compiled(tiny, "forward", build) is plain
    assert built == [False, True]
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32))
    np.testing.assert_allclose(xla(x), tiny(x), atol=1e-6)
    assert not xla.plain  # XLA compiled it: no fallback


def test_a_pass_xla_cannot_compile_runs_without_it_after_one_warning(tiny):
    built = []

    def build(jit):  # EagerPyFunc has no XLA kernel on any device
        built.append(jit)
        return tf.function(lambda x: tf.py_function(lambda t: 2 * t, [x], tf.float32),
                           input_signature=[tf.TensorSpec((None,))], jit_compile=jit)

    with jit_compile():
        step = compiled(tiny, ("doubling", 1), build)
    with pytest.warns(UserWarning, match=r"^XLA cannot compile doubling \(EagerPyFunc\): it runs "
                                         "without XLA$") as caught:
        np.testing.assert_array_equal(step(tf.constant([1.0, 2.0])), [2.0, 4.0])
        np.testing.assert_array_equal(step(tf.constant([3.0])), [6.0])
    assert len(caught) == 1 and built == [True, False]


def test_errors_of_the_computation_are_not_taken_for_xla_failures(tiny):
    def build(jit):
        return tf.function(lambda x: tf.reshape(x, (3,)), input_signature=[tf.TensorSpec((None,))],
                           jit_compile=jit)

    with jit_compile():
        step = compiled(tiny, "reshaping", build)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(tf.errors.InvalidArgumentError, match="requested shape has 3"):
            step(tf.constant([1.0, 2.0]))
    assert not step.plain


def _both_ways(run):
    """`run()` without XLA, then with it."""
    plain = run()
    with jit_compile():
        return plain, run()


@pytest.fixture(scope="module")
def demo_input():
    return np.random.default_rng(0).uniform(0, 1, (5, 28, 28, 1)).astype(np.float32)


def test_a_score_pass_gives_the_same_numbers_with_xla(demo, demo_input):
    from kvis.core import runner
    from kvis.core.targets import input_gradients, make_target

    target = make_target(demo, len(demo_input), classes=[0, 3, 9, 1, 2], purpose="the test")
    plain, xla = _both_ways(lambda: input_gradients(demo, demo_input, target, batch_size=2,
                                                    progress=False))
    np.testing.assert_allclose(xla["scores"], plain["scores"], rtol=1e-4, atol=1e-5)
    scale = np.abs(plain["gradient"]).max()
    np.testing.assert_allclose(xla["gradient"], plain["gradient"], atol=1e-4 * scale)
    scores = [key for key, jit in runner._compiled[demo] if key[0] == "score"]
    assert any((key, False) in runner._compiled[demo] and (key, True) in runner._compiled[demo]
               and not runner._compiled[demo][key, True].plain for key in scores)


@pytest.mark.filterwarnings("ignore:XLA cannot compile explicit deconvnet")  # max-pool switches
@pytest.mark.parametrize("layer", ["block1_conv2", "block3_conv1"])
def test_the_explicit_deconvnet_gives_the_same_numbers_with_xla(demo, demo_input, layer):
    from kvis.deconv.explicit import explicit_deconvnet

    signal = np.random.default_rng(1).normal(
        size=(len(demo_input), *demo.get_layer(layer).output.shape[1:])).astype(np.float32)
    plain, xla = _both_ways(lambda: explicit_deconvnet(demo, demo_input, layer, signal,
                                                       batch_size=2, progress=False))
    assert np.abs(plain).max() > 0
    np.testing.assert_allclose(xla, plain, atol=1e-4 * np.abs(plain).max())


def test_a_scan_gives_the_same_numbers_with_xla(demo, demo_input):
    from kvis.dataset.scan import scan

    layers = ["block1_conv2", "block3_conv1"]
    plain, xla = _both_ways(lambda: scan(demo, demo_input, layers, count=3, batch_size=2,
                                         progress=False))
    for layer in layers:
        scale = plain.top[layer].values.max()
        np.testing.assert_allclose(xla.top[layer].values, plain.top[layer].values,
                                   atol=1e-5 * scale)
        np.testing.assert_array_equal(xla.top[layer].images, plain.top[layer].images)
        np.testing.assert_array_equal(xla.top[layer].positions, plain.top[layer].positions)
        np.testing.assert_allclose(xla.stats[layer].total, plain.stats[layer].total,
                                   rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_array_equal(xla.stats[layer].active, plain.stats[layer].active)


def test_a_maximization_gives_the_same_images_with_xla(demo):
    from kvis.synthesis.maximize import maximize_filters
    from kvis.synthesis.render import default_settings

    settings = default_settings(demo, steps=16, chunk=8)
    plain, xla = _both_ways(lambda: maximize_filters(demo, "block2_conv2", [0, 5],
                                                     settings=settings, progress=False))
    # Gradient ascent amplifies round-off: Adam sizes each coefficient's step by that
    # coefficient's own gradient, so where a gradient is near zero XLA's other summation
    # order can decide a whole step. The objective and the image as a whole agree; single
    # pixels drift (up to 0.015 over 16 steps for 3 seeds x 8 filters measured, 0.04 over 32).
    np.testing.assert_allclose(xla.scores, plain.scores, rtol=2e-3)
    difference = np.abs(xla.images - plain.images)
    assert difference.mean() < 2e-3 and difference.max() < 0.1


@pytest.mark.parametrize("options, expected", [([], False), (["--xla"], True)])
def test_the_cli_flag_reaches_the_runner(monkeypatch, options, expected):
    from click.testing import CliRunner

    from kvis.cli import main
    from kvis.core import runner
    from kvis.synthesis import maximize

    seen = []

    def recorded(*args, **kwargs):
        seen.append(runner.jit_compile_enabled())
        raise KvisError("stopped here")

    monkeypatch.setattr(maximize, "maximize_filters", recorded)
    result = CliRunner().invoke(main, [*options, "maximize", "demo", "--layer", "block2_conv2",
                                       "--out", "unused.png"])
    assert "stopped here" in result.output and seen == [expected]
    assert not runner.jit_compile_enabled()  # back off after the command
