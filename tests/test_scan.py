import dataclasses

import numpy as np
import pytest
from conftest import brute_force_top_images, brute_force_top_k

from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.dataset import scan as dataset_scan
from kvis.dataset.scan import merge_scans, scan
from kvis.layers.feature_maps import feature_maps


@pytest.fixture
def data(tiny):
    configure_model(tiny, preprocessing="unit")
    return np.random.default_rng(5).uniform(0, 1, (37, 16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize("count", [9, 1000])  # 1000: past the positive activations, ties at 0
def test_scan_equals_brute_force_over_every_activation(tiny, data, count):
    found = scan(tiny, data, ["conv1", "conv2"], count=count, strongest="positions",
                 batch_size=8, progress=False)
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


def _interrupt_after(batches, monkeypatch):
    """Make the next scan stop with Ctrl-C after merging `batches` batches."""
    real, calls = dataset_scan._merge_batch, []

    def interrupted(state, batch, outputs):
        calls.append(1)
        if len(calls) > batches:
            raise KeyboardInterrupt
        return real(state, batch, outputs)

    monkeypatch.setattr(dataset_scan, "_merge_batch", interrupted)


def test_a_killed_scan_resumes_to_exactly_the_uninterrupted_result(tiny, data, tmp_path,
                                                                   monkeypatch):
    whole = scan(tiny, data, ["conv1", "conv2"], count=5, strongest="positions", batch_size=4,
                 progress=False)
    _interrupt_after(6, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny, data, ["conv1", "conv2"], count=5, strongest="positions", batch_size=4,
             checkpoint=tmp_path / "s.npz", every=2, progress=False)
    monkeypatch.undo()
    resumed = scan(tiny, data, ["conv1", "conv2"], count=5, strongest="positions", batch_size=4,
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
    with pytest.raises(KvisError, match=r"of another scan \(layers, count differ: layers: "
                                        r"checkpoint \['conv2'\], this run \['conv1'\]; "
                                        r"count: checkpoint 5, this run 3\)"):
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


@pytest.mark.parametrize("strongest", ["images", "positions"])
def test_a_scan_without_statistics_finds_the_same_strongest_and_resumes(tiny, data, tmp_path,
                                                                       monkeypatch, strongest):
    from kvis.dataset.examples import read_index, write_index
    from kvis.dataset.statistics import plot_statistics

    whole = scan(tiny, data, ["conv1", "conv2"], count=5, strongest=strongest, batch_size=4,
                 progress=False)
    _interrupt_after(5, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny, data, ["conv1", "conv2"], count=5, strongest=strongest, statistics=False,
             batch_size=4, checkpoint=tmp_path / "s.npz", every=2, progress=False)
    monkeypatch.undo()
    with pytest.raises(KvisError, match=r"statistics differ: statistics: checkpoint False, "
                                        r"this run True"):
        scan(tiny, data, ["conv1", "conv2"], count=5, strongest=strongest, batch_size=4,
             checkpoint=tmp_path / "s.npz", resume=True, progress=False)
    bare = scan(tiny, data, ["conv1", "conv2"], count=5, strongest=strongest, statistics=False,
                batch_size=4, checkpoint=tmp_path / "s.npz", resume=True, progress=False)
    write_index(bare, tmp_path / "index.json")
    for found in (bare, read_index(tmp_path / "index.json")):
        assert found.stats == {} and found.images == 37
        for path in whole.layers:
            for field in ("values", "images", "positions"):
                np.testing.assert_array_equal(getattr(found.top[path], field),
                                              getattr(whole.top[path], field))
    with pytest.raises(KvisError, match="the statistics figure needs the scan's statistics, "
                                        "and this scan gathered none"):
        plot_statistics(bare)
    with pytest.raises(KvisError, match="cannot merge scans of different .* statistics"):
        merge_scans(bare, whole)


def test_bad_scans_are_one_line_errors(tiny, data):
    with pytest.raises(KvisError, match="count must be at least 1"):
        scan(tiny, data, "conv2", count=0)
    with pytest.raises(KvisError, match="the dataset scan needs a spatial layer; 'gap'"):
        scan(tiny, data, "gap")


@pytest.mark.parametrize("batch_size", [1, 8, 37])
def test_distinct_images_equal_brute_force_and_merge_exactly(tiny, data, batch_size):
    found = scan(tiny, data, ["conv1", "conv2"], count=9, batch_size=batch_size, progress=False)
    maps = feature_maps(tiny, data, ["conv1", "conv2"], batch_size=batch_size, progress=False)
    halves = [scan(tiny, part, ["conv1", "conv2"], count=9, batch_size=batch_size,
                   progress=False) for part in (data[:20], data[20:])]
    halves[1] = dataclasses.replace(halves[1], top={
        p: dataclasses.replace(t, images=np.where(t.images >= 0, t.images + 20, -1))
        for p, t in halves[1].top.items()})  # the second half's ids in the whole
    merged = merge_scans(*halves)
    for path in ("conv1", "conv2"):
        values, images, positions = brute_force_top_images(maps[path], np.arange(37), 9)
        np.testing.assert_allclose(found.top[path].values, values, rtol=1e-6)
        np.testing.assert_array_equal(found.top[path].images, images)
        np.testing.assert_array_equal(found.top[path].positions, positions)
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(merged.top[path], field),
                                          getattr(found.top[path], field))
    assert found.strongest == "images"


def test_an_image_tied_with_the_state_gets_its_position_whatever_its_id(tiny):
    """An activation equal to the state's k-th value enters it when its image id is lower (a
    shard merged out of order): its position must have been looked for."""
    from kvis.dataset.readers import Batch
    from kvis.dataset.sources import image_source

    zeros = np.zeros((10, 16, 16, 3), np.float32)  # every activation 0: all tied
    configure_model(tiny, preprocessing="unit")
    paths = ("conv1",)
    state = dataset_scan.empty_scan(tiny, paths, image_source(zeros), count=3)
    run = dataset_scan.batch_runner(tiny, paths, count=3)
    for ids in (np.arange(5, 10), np.arange(5)):  # the later images first
        state = run(state, Batch(ids, zeros[ids], []))
    top = state.top["conv1"]
    np.testing.assert_array_equal(top.images, np.tile([0, 1, 2], (4, 1)))
    np.testing.assert_array_equal(top.positions, np.zeros((4, 3, 2)))


def test_distinct_images_never_repeat_where_positions_do(tiny):
    configure_model(tiny, preprocessing="unit")
    data = np.random.default_rng(2).uniform(0, 0.1, (12, 16, 16, 3)).astype(np.float32)
    data[4] = 1.0  # one bright image holds many of every channel's strongest positions
    by_image = scan(tiny, data, "conv1", count=9, progress=False).top["conv1"]
    by_position = scan(tiny, data, "conv1", count=9, strongest="positions",
                       progress=False).top["conv1"]
    assert all(len(set(row)) == 9 for row in by_image.images)
    assert any(len(set(row)) < 9 for row in by_position.images)
    np.testing.assert_array_equal(by_image.values[:, 0], by_position.values[:, 0])


def test_a_resumed_scan_of_distinct_images_equals_the_uninterrupted_one(tiny, data, tmp_path,
                                                                       monkeypatch):
    whole = scan(tiny, data, "conv2", count=5, batch_size=4, progress=False)
    _interrupt_after(3, monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # every=50: only the interruption saves
        scan(tiny, data, "conv2", count=5, batch_size=4, checkpoint=tmp_path / "s.npz",
             progress=False)
    monkeypatch.undo()
    assert dataset_scan.checkpoint_progress(tmp_path / "s.npz") == (12, 37)
    resumed = scan(tiny, data, "conv2", count=5, batch_size=4, checkpoint=tmp_path / "s.npz",
                   resume=True, progress=False)
    for field in ("values", "images", "positions"):
        np.testing.assert_array_equal(getattr(resumed.top["conv2"], field),
                                      getattr(whole.top["conv2"], field))
    with pytest.raises(KvisError, match="strongest: checkpoint 'images', this run 'positions'"):
        scan(tiny, data, "conv2", count=5, strongest="positions", batch_size=4,
             checkpoint=tmp_path / "s.npz", resume=True, progress=False)


@pytest.fixture
def photos(tmp_path):
    """Ten demo images as PNG files, for the scan commands."""
    import cv2

    from kvis.core.demo import demo_images

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, pixels in enumerate(demo_images()[0][:10]):
        cv2.imwrite(str(folder / f"{i}.png"), pixels)
    return folder


def _kvis(*args):
    from click.testing import CliRunner

    from kvis.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_scan_into_a_folder_holding_one_is_refused_resumed_or_replaced(photos, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "scan"
    common = ["demo", photos, "--keep", 2, "--batch-size", 4, "--out", out]
    first = _kvis("topk", *common, "--count", 2, "--layers", "block1_conv1,block2_conv2")
    assert first.exit_code == 0, first.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["checkpoint.npz", "index.json", "top2_block1_conv1.png",
                       "top2_block2_conv2.png"]
    again = _kvis("stats", *common, "--layers", "block1_conv1")
    assert again.exit_code == 1 and sorted(p.name for p in out.iterdir()) == written
    assert again.output.strip().endswith(f"Error: {out} holds a scan of 10 of 10 images; pass "
                                         "--resume to finish it or --overwrite to replace it")
    replaced = _kvis("topk", *common, "--count", 2, "--layers", "block1_conv1", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "index.json",
                                                     "top2_block1_conv1.png"]
    real, calls = dataset_scan._merge_batch, []

    def interrupted_after_one_batch(state, batch, outputs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(state, batch, outputs)

    monkeypatch.setattr(dataset_scan, "_merge_batch", interrupted_after_one_batch)
    stopped = _kvis("stats", *common, "--overwrite")
    assert stopped.exit_code == 130
    assert "interrupted at 4 of 10 images; to continue, run the same command with --resume" \
        in stopped.output
    monkeypatch.undo()
    resumed = _kvis("stats", *common, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at 4 of 10 images" in resumed.output
    assert "scanned 10 images (0 skipped)" in resumed.output


def test_stats_says_no_dead_channels_in_words(photos, tmp_path):
    result = _kvis("stats", "demo", photos, "--layers", "block1_conv1", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert "block1_conv1 (32 channels): no dead channels; none active at under 1% of " \
           "positions" in result.output
