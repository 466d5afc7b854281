"""The streaming top-k state of a dataset scan: for every channel of some layers, the k strongest
activations seen so far (value, image id, spatial position), in memory that depends on layers x
channels x k, never on the number of images.

States are mergeable: `merge(scan(A), scan(B))` equals `scan(A + B)` for any split of a dataset,
exactly, because ties are broken by a total order (value descending, then image id, row and
column ascending). That is what lets a scan be checkpointed, resumed, sharded over devices or
combined by an Apache Beam combiner.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.errors import KvisError


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

    def update(self, activations, image_ids):
        """The state after also seeing a batch of a layer's activations.

        Args:
            activations: float (N, h, w, C), the layer's output for N images (a tensor works).
            image_ids: int (N,), the images' ids in the dataset, increasing.

        Returns:
            A new `TopK`.

        Raises:
            KvisError: a channel count that differs from the state's, or image ids that do
                not increase.
        """
        if activations.shape[-1] != len(self.values):
            raise KvisError(f"a batch with {activations.shape[-1]} channels for a top-k state "
                            f"of {len(self.values)}")
        return merge(self, batch_top_k(activations, image_ids, self.k))


def batch_top_k(activations, image_ids, k):
    """The top-k state of one batch, computed with `tf.math.top_k` (on the device in a
    compiled scan).

    `tf.math.top_k` puts the lower index first among equal values, and the flat index of an
    activation grows with (image, row, col): with increasing image ids that is exactly the
    total order that makes states mergeable.

    Args:
        activations: float (N, h, w, C).
        image_ids: int (N,), increasing.
        k: activations to keep per channel.

    Returns:
        A `TopK` with min(k, N*h*w) entries per channel, padded to k with empties.
    """
    image_ids = np.asarray(image_ids, np.int64)
    if np.any(np.diff(image_ids) <= 0):
        raise KvisError("the image ids of a batch must increase")
    count, height, width, channels = activations.shape
    per_channel = tf.transpose(tf.reshape(tf.cast(activations, tf.float32), (-1, channels)))
    values, flat = tf.math.top_k(per_channel, k=min(k, count * height * width))
    flat = flat.numpy()
    image, row, col = np.unravel_index(flat, (count, height, width))
    found = TopK(values.numpy(), image_ids[image], np.stack([row, col], -1).astype(np.int32))
    return merge(found, TopK.empty(channels, k))


def merge(*states):
    """The state of the union of what each state saw (image ids must not repeat across them).

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
