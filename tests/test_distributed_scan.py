"""The scan on existing engines: tf.distribute.MirroredStrategy and Apache Beam."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses, Beam, several devices

MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 3)
from conftest import tiny_cnn
from kvis.dataset.scan import scan
from kvis.core.models import configure_model

model = configure_model(tiny_cnn(), preprocessing="unit")
data = np.random.default_rng(4).uniform(0, 1, (29, 16, 16, 3)).astype(np.float32)
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
assert strategy.num_replicas_in_sync == 3
for strongest in ("images", "positions"):
    one = scan(model, data, ["conv1", "conv2"], count=6, strongest=strongest, batch_size=8,
               progress=False)
    many = scan(model, data, ["conv1", "conv2"], count=6, strongest=strongest, batch_size=8,
                strategy=strategy, progress=False)
    for layer in one.layers:
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(one.top[layer], field),
                                          getattr(many.top[layer], field))
        np.testing.assert_array_equal(one.stats[layer].active, many.stats[layer].active)
        np.testing.assert_allclose(one.stats[layer].total, many.stats[layer].total, rtol=1e-6)
    print("same", many.images)
"""


def test_mirrored_strategy_over_three_devices_gives_the_single_process_scan():
    tests = os.path.dirname(__file__)
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                            cwd=tests, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.stdout.split() == ["same", "29"] * 2, result.stdout + result.stderr[-3000:]


def _beam_or_skip():
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        if os.environ.get("KVIS_REQUIRE_BEAM"):
            raise
        pytest.skip('Apache Beam is not installed (pip install "kvis[beam]"); CI installs it')


@pytest.mark.parametrize("strongest", ["images", "positions"])
def test_beam_pipeline_on_the_direct_runner_gives_the_single_process_scan(tmp_path, strongest):
    _beam_or_skip()
    from kvis.core.models import load_model
    from kvis.dataset.beam import scan_on_beam
    from kvis.dataset.examples import read_index
    from kvis.dataset.scan import scan

    scan_on_beam("demo", "demo", tmp_path / "index.json",
                 layers=["block2_conv2", "block3_conv1"], count=9, strongest=strongest,
                 batch_size=32, batches_per_shard=3)
    on_beam = read_index(tmp_path / "index.json")
    single = scan(load_model("demo"), "demo", ["block2_conv2", "block3_conv1"], count=9,
                  strongest=strongest, progress=False)
    assert on_beam.images == single.images == 400
    assert on_beam.strongest == single.strongest == strongest
    for layer in single.layers:
        for field in ("images", "positions"):
            np.testing.assert_array_equal(getattr(on_beam.top[layer], field),
                                          getattr(single.top[layer], field))
        np.testing.assert_allclose(on_beam.top[layer].values, single.top[layer].values)
        np.testing.assert_array_equal(on_beam.stats[layer].active, single.stats[layer].active)
