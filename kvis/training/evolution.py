"""Feature evolution during training (Zeiler & Fergus, ECCV 2014, Fig. 4): at chosen epochs, the
strongest activation of chosen feature maps over a fixed sample, projected back to pixels; at
the end a grid with a row per feature map and a column per epoch.

The callback reuses the dataset scan (`kvis.scan` with count = 1) and its projections
(`kvis.top_examples`) on the sample: one forward pass over the sample at a chosen epoch,
nothing at the others. Its states are saved in the run's log directory, so a training run
resumed with `initial_epoch` continues the same grid.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.io import check_writable, write_atomically
from kvis.dataset.examples import top_examples
from kvis.dataset.scan import scan, scan_layers
from kvis.plot.figures import WIDEST, NotebookFigure, fit_texts, show_image

EPOCHS = (1, 2, 5, 10, 20, 30, 40, 64)
STATE_FILE = "feature_evolution.npz"
_FIELDS = ("values", "images", "positions", "projections", "patches")


@dataclass(frozen=True)
class Evolution:
    """The strongest activation of feature maps over a sample, epoch by epoch.

    Attributes:
        layers: the layer paths.
        channels: `{layer: int (K,)}` the feature maps followed.
        epochs: int (E,) the 1-based epochs recorded, ascending.
        values: `{layer: float32 (E, K)}` the strongest activation over the sample.
        images: `{layer: int64 (E, K)}` the sample image holding it.
        positions: `{layer: int32 (E, K, 2)}` its (row, col).
        projections: `{layer: float32 (E, K, h, w, C)}` its deconvnet projection in [0, 1]
            (mid-gray is zero), cropped to its receptive-field window.
        patches: `{layer: uint8 (E, K, h, w, C)}` the image pixels in that window.
    """

    layers: tuple
    channels: dict
    epochs: np.ndarray
    values: dict
    images: dict
    positions: dict
    projections: dict
    patches: dict


class FeatureEvolution(keras.callbacks.Callback):
    """A Keras callback that records how feature maps evolve during `model.fit`.

    Args:
        sample: fixed images to search, anything `kvis.dataset.sources.image_source` takes (an array
            of model input, a folder, an IDX file, "demo", a `tf.data.Dataset`).
        layers: spatial layer paths (nested `base/layer` paths work).
        channels: the feature maps to follow: a list for every layer, or `{layer: list}`;
            default the first 6 of each layer.
        epochs: the 1-based epochs to record (default 1, 2, 5, 10, 20, 30, 40, 64, clipped to
            the run; epochs you give must lie within it). The run's last epoch is always
            recorded too, so the grid ends with the trained model.
        log_dir: where the states are saved (`feature_evolution.npz`) after each recorded
            epoch, and read back when training resumes; None keeps them in memory.
        batch_size: images per forward pass over the sample.

    Raises (at `on_train_begin`, before any epoch runs):
        KvisError: an unknown or non-spatial layer, a channel out of range, an epoch below 1
            or past the run, an unwritable log directory, a saved state of other layers or
            channels.

    Example:
        >>> evolution = kvis.FeatureEvolution(x_test[:500], ["block2_conv2", "block3_conv1"],
        ...                                   log_dir="logs/run1")
        >>> model.fit(x, y, epochs=20, callbacks=[evolution])
        >>> kvis.plot_evolution(evolution.result())
    """

    def __init__(self, sample, layers, *, channels=None, epochs=EPOCHS, log_dir=None,
                 batch_size=32):
        super().__init__()
        self.sample, self.layers_asked, self.channels_asked = sample, layers, channels
        self.epochs_asked, self.batch_size = tuple(epochs), batch_size
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.recorded = {}

    def on_train_begin(self, logs=None):
        model = self.model
        self.paths = scan_layers(model, self.layers_asked)
        graph = model_graph(model)
        self.channels = {}
        for path in self.paths:
            count = graph.nodes[path].output.shape[-1]
            wanted = np.array(range(min(6, count)) if self.channels_asked is None else
                              self.channels_asked.get(path, range(min(6, count)))
                              if isinstance(self.channels_asked, dict) else
                              self.channels_asked, int)
            if bad := [int(c) for c in wanted if not 0 <= c < count]:
                raise KvisError(f"{path} channel {bad[0]} is out of range (0-{count - 1})")
            self.channels[path] = wanted
        if bad := [e for e in self.epochs_asked if int(e) < 1]:
            raise KvisError(f"epochs are counted from 1; got {bad[0]}")
        last = (self.params or {}).get("epochs")
        if self.epochs_asked != EPOCHS and last is not None and max(self.epochs_asked) > last:
            raise KvisError(f"epoch {max(self.epochs_asked)} is past the run's {last} epochs")
        self.epochs = sorted({int(e) for e in self.epochs_asked
                              if last is None or int(e) <= last} | ({last} if last else set()))
        if self.log_dir is not None:
            check_writable(self.log_dir / STATE_FILE)
            if (self.log_dir / STATE_FILE).is_file():
                self.recorded = self._resumed(self.log_dir / STATE_FILE)

    def _resumed(self, path):
        """The states a previous run saved, refused unless they follow the same maps."""
        paths, channels, recorded = _read_states(path)
        if paths != self.paths or any(not np.array_equal(channels[p], self.channels[p])
                                      for p in paths):
            raise KvisError(f"{path} follows other feature maps ({', '.join(paths)}); use "
                            "another log_dir, or the same layers and channels")
        return recorded

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        try:
            self.recorded[epoch + 1] = self._record()
            if self.log_dir is not None:
                _write_states(self.log_dir / STATE_FILE, self.paths, self.channels,
                              self.recorded)
        except Exception as error:  # a view must never stop the user's training
            warnings.warn(f"FeatureEvolution could not record epoch {epoch + 1}: "
                          f"{type(error).__name__}: {error}", stacklevel=2)

    def result(self):
        """The `Evolution` recorded so far (including epochs of a resumed run)."""
        return _evolution(self.paths, self.channels, self.recorded)

    def _record(self):
        found = scan(self.model, self.sample, self.paths, count=1, batch_size=self.batch_size,
                     progress=False)
        state = {}
        for path in self.paths:
            examples = top_examples(self.model, found, self.sample, layer=path,
                                    channels=self.channels[path],
                                    batch_size=self.batch_size, progress=False)
            top = found.top[path]
            state[path] = (examples.values[:, 0], top.images[self.channels[path], 0],
                           top.positions[self.channels[path], 0],
                           examples.projections[:, 0], examples.patches[:, 0])
        return state


def load_evolution(log_dir):
    """The `Evolution` a `FeatureEvolution` callback saved in `log_dir`.

    Raises:
        KvisError: no saved state there, or an unreadable one.
    """
    path = Path(log_dir) / STATE_FILE
    if not path.is_file():
        raise KvisError(f"no feature evolution in {log_dir} (expected {STATE_FILE}, written "
                        "by kvis.FeatureEvolution(..., log_dir=...))")
    paths, channels, recorded = _read_states(path)
    return _evolution(paths, channels, recorded)


def plot_evolution(result, *, fig=None, title=None, patches=False):
    """Zeiler & Fergus Fig. 4: a row per feature map, a column per epoch, each tile the
    projection of the map's strongest activation over the sample at that epoch.

    Args:
        result: an `Evolution`.
        fig: a Figure or SubFigure to draw in.
        title: the figure's title.
        patches: show the image patches instead of the projections.

    Returns:
        A Figure.

    Raises:
        KvisError: nothing recorded yet.
    """
    if not len(result.epochs):
        raise KvisError("no epoch recorded yet")
    rows = [(path, k) for path in result.layers for k in range(len(result.channels[path]))]
    tile = min(1.0, (WIDEST - 1.6) / len(result.epochs))
    if fig is None:
        fig = NotebookFigure(figsize=(tile * len(result.epochs) + 1.6, tile * len(rows) + 0.8),
                             layout="constrained")
    axes = fig.subplots(len(rows), len(result.epochs), squeeze=False)
    for r, (path, k) in enumerate(rows):
        tiles = (result.patches if patches else result.projections)[path]
        for e, epoch in enumerate(result.epochs):
            ax = axes[r, e]
            tile = tiles[e, k]
            show_image(ax, tile, vmax=255 if patches else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"epoch {epoch}", fontsize=8)
            if e == 0:
                ax.set_ylabel(f"{path}\n#{result.channels[path][k]}", fontsize=8)
    fig.suptitle(title or "strongest activation over the sample, epoch by epoch "
                          "(Zeiler & Fergus 2014, Fig. 4)", fontsize=9)
    return fit_texts(fig)


def _evolution(paths, channels, recorded):
    epochs = np.array(sorted(recorded), np.int64)
    fields = [{path: np.stack([recorded[e][path][i] for e in epochs]) if len(epochs) else
               np.zeros((0, len(channels[path]))) for path in paths} for i in range(5)]
    return Evolution(tuple(paths), dict(channels), epochs, *fields)


def _write_states(path, paths, channels, recorded):
    arrays = {"layers": np.array(paths), "epochs": np.array(sorted(recorded), np.int64)}
    for i, layer in enumerate(paths):
        arrays[f"{i}_channels"] = channels[layer]
        for f, field in enumerate(_FIELDS):
            arrays[f"{i}_{field}"] = np.stack([recorded[e][layer][f] for e in sorted(recorded)])

    def write(temporary):
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)

    write_atomically(path, write)


def _read_states(path):
    """`(layer paths, {layer: channels}, {epoch: {layer: fields}})` saved in `path`."""
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError) as error:
        raise KvisError(f"cannot read {path}: {error}") from None
    paths = tuple(str(p) for p in arrays["layers"])
    channels = {p: arrays[f"{i}_channels"] for i, p in enumerate(paths)}
    recorded = {int(e): {p: tuple(arrays[f"{i}_{field}"][n] for field in _FIELDS)
                         for i, p in enumerate(paths)}
                for n, e in enumerate(arrays["epochs"])}
    return paths, channels, recorded
