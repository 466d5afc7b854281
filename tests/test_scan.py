import numpy as np
import pytest
from conftest import brute_force_top_k

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.dataset import scan as dataset_scan
from kvis.dataset.scan import scan
from kvis.layers.feature_maps import feature_maps


@pytest.fixture
def data(tiny):
    configure_model(tiny, preprocessing="unit")
    return np.random.default_rng(5).uniform(0, 1, (37, 16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize("count", [9, 1000])  # 1000: past the positive activations, ties at 0
def test_scan_equals_brute_force_over_every_activation(tiny, data, count):
    found = scan(tiny, data, ["conv1", "conv2"], count=count, batch_size=8, progress=False)
    # The reference maps at the scan's batch size: CPU kernels differ by batch size.
    maps = feature_maps(tiny, data, ["conv1", "conv2"], batch_size=8, progress=False)
    assert found.images == 37 and found.batches == 5 and not found.skipped
    assert count < 1000 or np.any(found.top["conv2"].values == 0)  # ties at 0 were ordered
    for path in ("conv1", "conv2"):
        values, images, positions = brute_force_top_k(maps[path], np.arange(37), count)
        np.testing.assert_allclose(found.top[path].values, values, rtol=1e-6)
        np.testing.assert_array_equal(found.top[path].images, images)
        np.testing.assert_array_equal(found.top[path].positions, positions)
        stats = found.stats[path]
        np.testing.assert_allclose(stats.mean, maps[path].mean(axis=(0, 1, 2)), rtol=1e-5)
        np.testing.assert_allclose(stats.peak, maps[path].max(axis=(0, 1, 2)), rtol=1e-6)
        np.testing.assert_allclose(stats.fraction_active,
                                   (maps[path] > 0).mean(axis=(0, 1, 2)), rtol=1e-12)
        dead = np.flatnonzero(maps[path].max(axis=(0, 1, 2)) <= 0)
        np.testing.assert_array_equal(stats.dead, dead)


def test_memory_does_not_grow_with_the_dataset(tiny, data):
    small = scan(tiny, data[:5], "conv2", count=4, progress=False)
    large = scan(tiny, np.concatenate([data] * 3), "conv2", count=4, progress=False)
    assert small.top["conv2"].values.shape == large.top["conv2"].values.shape == (6, 4)


def test_a_killed_scan_resumes_to_exactly_the_uninterrupted_result(tiny, data, tmp_path,
                                                                   monkeypatch):
    whole = scan(tiny, data, ["conv1", "conv2"], count=5, batch_size=4, progress=False)
    real, calls = dataset_scan._merge_batch, []

    def dies_after_six_batches(state, batch, outputs):
        calls.append(1)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return real(state, batch, outputs)

    monkeypatch.setattr(dataset_scan, "_merge_batch", dies_after_six_batches)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny, data, ["conv1", "conv2"], count=5, batch_size=4, checkpoint=tmp_path / "s.npz",
             every=2, progress=False)
    monkeypatch.setattr(dataset_scan, "_merge_batch", real)
    resumed = scan(tiny, data, ["conv1", "conv2"], count=5, batch_size=4,
                   checkpoint=tmp_path / "s.npz", every=2, resume=True, progress=False)
    assert resumed.images == whole.images == 37 and resumed.batches == whole.batches
    for path in whole.layers:
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(resumed.top[path], field),
                                          getattr(whole.top[path], field))
        np.testing.assert_array_equal(resumed.stats[path].active, whole.stats[path].active)
        np.testing.assert_allclose(resumed.stats[path].total, whole.stats[path].total)


def test_a_checkpoint_of_another_scan_is_refused_by_name(tiny, data, tmp_path):
    scan(tiny, data, "conv2", count=5, checkpoint=tmp_path / "s.npz", progress=False)
    with pytest.raises(KvisError, match=r"of another scan \(layers, count differ"):
        scan(tiny, data, "conv1", count=3, checkpoint=tmp_path / "s.npz", resume=True,
             progress=False)


def test_a_full_disk_while_checkpointing_keeps_the_last_good_state(tiny, data, tmp_path,
                                                                   monkeypatch):
    import errno
    import pathlib

    writes, real = [], pathlib.Path.write_bytes

    def disk_fills_up(self, content):
        writes.append(self.name)
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, content)

    monkeypatch.setattr(pathlib.Path, "write_bytes", disk_fills_up)
    with pytest.raises(KvisError, match=r"cannot write .*s\.npz: No space left on device"):
        scan(tiny, data, "conv2", count=5, batch_size=4, checkpoint=tmp_path / "s.npz", every=2,
             progress=False)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no half-written temporary
    resumed = scan(tiny, data, "conv2", count=5, batch_size=4, checkpoint=tmp_path / "s.npz",
                   resume=True, progress=False)
    whole = scan(tiny, data, "conv2", count=5, batch_size=4, progress=False)
    np.testing.assert_array_equal(resumed.top["conv2"].images, whole.top["conv2"].images)


def test_bad_scans_are_one_line_errors(tiny, data):
    with pytest.raises(KvisError, match="count must be at least 1"):
        scan(tiny, data, "conv2", count=0)
    with pytest.raises(KvisError, match="the dataset scan needs a spatial layer; 'gap'"):
        scan(tiny, data, "gap")
