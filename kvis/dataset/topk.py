"""The streaming top-k state of a dataset scan: for every channel of some layers, the k strongest
activations seen so far (value, image id, spatial position), in memory that depends on layers x
channels x k, never on the number of images.

The k strongest are either k distinct images, each at its strongest position (Zeiler & Fergus'
nine images), or any k positions (one image can then fill several places): `STRONGEST`.

States are mergeable: `merge(scan(A), scan(B))` equals `scan(A + B)` for any split of a dataset,
exactly, because ties are broken by a total order (value descending, then image id, row and
column ascending). For distinct images that holds because each image is reduced to its strongest
position before it meets any other image, and an image belongs to one part of a split only.
That is what lets a scan be checkpointed, resumed, sharded over devices or combined by an
Apache Beam combiner.
"""

from dataclasses import dataclass

import numpy as np

from kvis.core.errors import KvisError

# What a channel's `count` strongest activations are: distinct images, each at its strongest
# position (first in row-major order among equals), or any positions.
STRONGEST = ("images", "positions")


@dataclass(frozen=True)
class TopK:
    """The k strongest activations per channel of one layer.

    Attributes:
        values: float32 (C, k), descending per channel; -inf where fewer than k were seen.
        images: int64 (C, k), the image id of each activation; -1 where empty.
        positions: int32 (C, k, 2), its (row, col) in the layer's output; -1 where empty.
    """

    values: np.ndarray
    images: np.ndarray
    positions: np.ndarray

    @property
    def k(self):
        return self.values.shape[1]

    @classmethod
    def empty(cls, channels, k):
        """A state that has seen nothing, for a layer with `channels` channels.

        Raises:
            KvisError: k below 1.
        """
        if k < 1:
            raise KvisError(f"k must be at least 1; got {k}")
        return cls(np.full((channels, k), -np.inf, np.float32), np.full((channels, k), -1),
                   np.full((channels, k, 2), -1, np.int32))


def merge(*states):
    """The state of the union of what each state saw (image ids must not repeat across them;
    for distinct images, each state holds an image once).

    Raises:
        KvisError: states of different layers or k.
    """
    if len({s.values.shape[0] for s in states}) != 1:
        raise KvisError("cannot merge the top-k states of different layers")
    k = max(s.k for s in states)
    values = np.concatenate([s.values for s in states], axis=1)
    images = np.concatenate([s.images for s in states], axis=1)
    positions = np.concatenate([s.positions for s in states], axis=1)
    # Empties sort last: -inf values, and their -1 ids never precede a real activation.
    order = np.lexsort((positions[..., 1], positions[..., 0], images, -values), axis=1)[:, :k]
    return TopK(np.take_along_axis(values, order, axis=1),
                np.take_along_axis(images, order, axis=1),
                np.take_along_axis(positions, order[..., None], axis=1))


def admit(state, found):
    """`merge(state, found)`, where `found` is what a batch adds: only the channels where it
    reaches the state's k-th value are merged (below it, nothing can enter); late in a scan
    that is a few of them."""
    rows = np.flatnonzero((found.values >= state.values[:, -1:]).any(axis=1))
    if len(rows) == len(state.values):
        return merge(state, found)
    merged = merge(TopK(*(field[rows] for field in (state.values, state.images,
                                                    state.positions))),
                   TopK(*(field[rows] for field in (found.values, found.images,
                                                    found.positions))))
    values, images, positions = state.values.copy(), state.images.copy(), state.positions.copy()
    values[rows], images[rows], positions[rows] = merged.values, merged.images, merged.positions
    return TopK(values, images, positions)


def checked_strongest(strongest):
    """`strongest` if it is one of `STRONGEST`.

    Raises:
        KvisError: anything else.
    """
    if strongest not in STRONGEST:
        raise KvisError(f"strongest is one of {', '.join(map(repr, STRONGEST))}; "
                        f"got {strongest!r}")
    return strongest
