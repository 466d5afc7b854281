import numpy as np
import pytest
from conftest import brute_force_top_images, brute_force_top_k
from helpers import update

from kvis.core.errors import KvisError
from kvis.dataset.topk import TopK, admit, merge


def _dataset(seed=0, count=23):
    """Activations with many ties (ReLU zeros, small integers), as a layer gives."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.integers(-3, 4, (count, 3, 4, 5)), 0).astype(np.float32)


def _scan(activations, ids, k, batch):
    state = TopK.empty(activations.shape[-1], k)
    for start in range(0, len(activations), batch):
        state = update(state, activations[start:start + batch], ids[start:start + batch])
    return state


@pytest.mark.parametrize("k, batch", [(1, 4), (9, 5), (9, 23), (40, 2)])
def test_streaming_top_k_equals_brute_force_over_all_activations(k, batch):
    activations = _dataset()
    ids = np.arange(100, 100 + len(activations))
    state = _scan(activations, ids, k, batch)
    values, images, positions = brute_force_top_k(activations, ids, k)
    np.testing.assert_array_equal(state.values, values)
    np.testing.assert_array_equal(state.images, images)
    np.testing.assert_array_equal(state.positions, positions)


@pytest.mark.parametrize("seed", range(4))
def test_merging_shards_of_any_split_equals_one_pass(seed):
    activations = _dataset(seed)
    ids = np.arange(len(activations))
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(ids)), 3, replace=False))
    shards = [_scan(part, part_ids, 9, 4) for part, part_ids in
              zip(np.split(activations, cuts), np.split(ids, cuts))]
    whole = _scan(activations, ids, 9, 7)
    merged = merge(*shards[::-1])  # in any order
    for field in ("values", "images", "positions"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))


@pytest.mark.parametrize("seed", range(4))
def test_admitting_a_shard_equals_merging_it_in_every_channel(seed):
    # Ties with the state's k-th value, earlier ids, channels the shard cannot enter: all
    # exactly as merge orders them, in either order of the shards.
    activations = _dataset(seed, 40)
    ids = np.arange(len(activations))
    part = np.isin(ids, np.random.default_rng(seed).choice(ids, 30, replace=False))
    activations[..., :2] = np.abs(np.random.default_rng(seed).normal(size=(40, 3, 4, 2)))
    activations[~part, ..., :2] *= 0.01  # channels 0 and 1: the second shard cannot enter
    first, second = (_scan(activations[mask], ids[mask], 9, 6) for mask in (part, ~part))
    for state, found in ((first, second), (second, first)):
        admitted, merged = admit(state, found), merge(state, found)
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(admitted, field), getattr(merged, field))
    assert not (second.values[:2] >= first.values[:2, -1:]).any()


@pytest.mark.parametrize("seed", range(4))
def test_merging_distinct_image_states_of_any_split_equals_one_pass(seed):
    # Each part keeps its k strongest images (each at its own strongest position); the
    # merge of the parts is the k strongest images of the whole, ties included.
    activations = _dataset(seed)
    ids = np.arange(len(activations))
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(ids)), 3, replace=False))
    shards = [TopK(*brute_force_top_images(part, part_ids, 9)) for part, part_ids in
              zip(np.split(activations, cuts), np.split(ids, cuts))]
    merged = merge(*shards[::-1])
    whole = brute_force_top_images(activations, ids, 9)
    for field, expected in zip(("values", "images", "positions"), whole):
        np.testing.assert_array_equal(getattr(merged, field), expected)
    assert all(len(set(row)) == 9 for row in merged.images)  # nine different images


def test_fewer_activations_than_k_leave_empties_last():
    state = update(TopK.empty(2, 5), np.float32([[[[3, 0]], [[1, 0]]]]), [7])  # 1x2x1x2
    np.testing.assert_array_equal(state.values[0], [3, 1, -np.inf, -np.inf, -np.inf])
    np.testing.assert_array_equal(state.images[0], [7, 7, -1, -1, -1])
    np.testing.assert_array_equal(state.positions[1, :2], [[0, 0], [1, 0]])


def test_bad_updates_are_refused():
    with pytest.raises(KvisError, match="k must be at least 1"):
        TopK.empty(3, 0)
    with pytest.raises(KvisError, match="4 channels for a top-k state of 3"):
        update(TopK.empty(3, 2), np.zeros((1, 2, 2, 4)), [0])
    with pytest.raises(KvisError, match="must increase"):
        update(TopK.empty(3, 2), np.zeros((2, 2, 2, 3)), [5, 5])
