"""A Keras callback that writes filters, feature maps and Grad-CAM of fixed images to TensorBoard.

Each view is the figure kvis draws after training (`plot_filters`, `plot_feature_maps`,
`plot_attention`), rendered to RGB on a Agg canvas and written as a TensorBoard image summary,
so the images open in a stock `tensorboard --logdir LOG_DIR` (the "images" run).

`write_images` writes the summary exactly as `tf.summary.image` does (PNG strings behind the
width and height, under the "images" plugin), with `tf.summary.write`: TensorFlow 2.21 no
longer installs TensorBoard, and without it `tf.summary.image` raises TBNotInstalledError.
"""

import warnings
from numbers import Integral
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tensorflow.core.framework import summary_pb2

from kvis.attribution.attention import plot_attention
from kvis.attribution.cam import grad_cam
from kvis.core.anatomy import last_conv_layer, require_classifier, spatial_node
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph
from kvis.core.images import as_images
from kvis.core.io import check_writable
from kvis.layers.feature_maps import feature_maps, plot_feature_maps
from kvis.layers.filters import conv_filters, plot_filters

# The summary run (sub-folder of log_dir) the images go to, beside Keras's "train"/"validation".
RUN = "images"


class TensorBoardImages(keras.callbacks.Callback):
    """Write filters, feature maps and Grad-CAM overlays of fixed images to TensorBoard.

    At the chosen epochs the callback draws, with the model's current weights:

    - `filters/<layer>`: `kvis.plot_filters(kvis.conv_filters(model, layer))` for each layer
      in `filter_layers` (one image);
    - `feature_maps/<layer>`: `kvis.plot_feature_maps` of each layer in `feature_map_layers`,
      one image per fixed image (at most `count`);
    - `grad_cam`: `kvis.plot_attention(kvis.grad_cam(model, images))`, each image beside its
      Grad-CAM overlay for its top class (one image).

    Summaries are written as `tf.summary.image` writes them (`write_images`) to
    `log_dir/images` at step = the 1-based epoch number. Everything about the arguments and
    the model is checked at `on_train_begin`, so a mistake stops `fit` before the first epoch;
    a failure while drawing never stops training: it is reported with `warnings.warn` (one
    line, RuntimeWarning) and the epoch goes on.

    Args:
        images: the fixed images: what `kvis.load_image` returns (one or a list), or
            preprocessed float32 model input (N, H, W, C).
        log_dir: the TensorBoard log directory (the one given to `keras.callbacks.TensorBoard`
            works: the images are a run of their own, "images").
        epochs: the 1-based epoch numbers to draw at, e.g. `[1, 2, 5, 10]`; None: every epoch.
            Epochs past the run are refused.
        filter_layers: a conv layer path or a list of them whose filters to show (None: none).
        feature_map_layers: a spatial layer path or a list of them whose maps to show (None:
            none).
        grad_cam: True for Grad-CAM at `kvis.last_conv_layer(model)`, a layer path for
            Grad-CAM there, False for none. Needs a classifier (output (N, classes)).
        count: at most this many images per tag and step (feature maps: one per image).

    Raises:
        KvisError (at `on_train_begin`): an unknown layer, a layer without a conv kernel for
            `filter_layers` or without spatial output for `feature_map_layers`/`grad_cam`, a
            model that is not a classifier with `grad_cam`, epochs that are not whole numbers
            >= 1 or lie past the run, images that do not fit the model, an unwritable
            `log_dir`, or `count` < 1.

    Example:
        >>> images = [kvis.load_image(path, model) for path in ("cat.jpg", "boot.png")]
        >>> model.fit(x, y, epochs=10, callbacks=[kvis.TensorBoardImages(
        ...     images, log_dir="logs", epochs=[1, 2, 5, 10], filter_layers="conv1",
        ...     feature_map_layers=["conv1", "conv2"])])
    """

    def __init__(self, images, *, log_dir, epochs=None, filter_layers=None,
                 feature_map_layers=None, grad_cam=True, count=16):
        super().__init__()
        self.images = images
        self.log_dir = log_dir
        self.epochs = epochs
        self.filter_layers = filter_layers
        self.feature_map_layers = feature_map_layers
        self.grad_cam = grad_cam
        self.count = count
        self._batch = None
        self._epochs = None
        self._writer = None
        self._views = []

    def on_train_begin(self, logs=None):
        """Check every argument against the model and open the summary writer.

        Raises:
            KvisError: see the class docstring; the message starts "TensorBoardImages: ".
        """
        self._close()
        try:
            self._check(self.model)
        except KvisError as error:
            message = str(error)
            if not message.startswith("TensorBoardImages"):
                message = f"TensorBoardImages: {message}"
            raise KvisError(message) from None

    def _check(self, model):
        self._epochs = _epoch_set(self.epochs, self.params.get("epochs"))
        if isinstance(self.count, bool) or not isinstance(self.count, Integral) \
                or self.count < 1:
            raise KvisError(f"TensorBoardImages: count must be a whole number >= 1; got "
                            f"{self.count!r}")
        self._batch = as_images(model, self.images)
        graph = model_graph(model)
        views = []
        for layer in _layers(self.filter_layers, "filter_layers"):
            path = conv_filters(model, layer).layer  # raises for a layer without a conv kernel
            views.append((f"filters/{path}", self._filter_images, path))
        for layer in _layers(self.feature_map_layers, "feature_map_layers"):
            path = spatial_node(graph, layer, "TensorBoardImages feature_map_layers").path
            views.append((f"feature_maps/{path}", self._feature_map_images, path))
        if self.grad_cam is not False and self.grad_cam is not None:
            require_classifier(model, "TensorBoardImages grad_cam")
            if self.grad_cam is True:
                layer = last_conv_layer(model)
            elif isinstance(self.grad_cam, str):
                layer = self.grad_cam
            else:
                raise KvisError(f"TensorBoardImages: grad_cam is True, False or a layer path; "
                                f"got {self.grad_cam!r}")
            path = spatial_node(graph, layer, "TensorBoardImages grad_cam").path
            views.append(("grad_cam", self._grad_cam_images, path))
        self._writer = _writer(Path(self.log_dir) / RUN)
        self._views = views

    def on_epoch_end(self, epoch, logs=None):
        """At a chosen epoch, draw every view and write it; a failing view only warns."""
        step = epoch + 1
        if self._writer is None or (self._epochs is not None and step not in self._epochs):
            return
        with self._writer.as_default():
            for tag, draw, layer in self._views:
                try:
                    pixels = draw(layer)
                    write_images(tag, pixels, step=step, count=self.count)
                except Exception as error:  # noqa: BLE001 - drawing must never stop training
                    first = (str(error).strip().splitlines() or [""])[0]
                    warnings.warn(f"TensorBoardImages: drawing {tag} at epoch {step} failed "
                                  f"({type(error).__name__}: {first}); training goes on",
                                  RuntimeWarning, stacklevel=2)
        self._writer.flush()

    def on_train_end(self, logs=None):
        """Flush and close the summary writer."""
        self._close()

    def _close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _filter_images(self, layer):
        return _rendered([plot_filters(conv_filters(self.model, layer))])

    def _feature_map_images(self, layer):
        maps = feature_maps(self.model, self.images, layer, progress=False)
        count = min(len(self._batch.x), self.count)
        return _rendered([plot_feature_maps(maps, layer=layer, image=i) for i in range(count)])

    def _grad_cam_images(self, layer):
        result = grad_cam(self.model, self.images, layer=layer, progress=False)
        return _rendered([plot_attention(result)])


def render(fig):
    """A matplotlib figure as uint8 RGB pixels (H, W, 3), drawn on a Agg canvas.

    Args:
        fig: a `matplotlib.figure.Figure` (e.g. what a kvis `plot_*` returns).

    Returns:
        uint8 (H, W, 3) in [0, 255]; H and W are the figure's size in inches times its dpi.

    Example:
        >>> pixels = render(kvis.plot_filters(kvis.conv_filters(model, "conv1")))
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_images(tag, pixels, *, step, count=3):
    """Write an image summary to the default writer, as `tf.summary.image` would.

    Args:
        tag: the summary's name ("filters/conv1").
        pixels: uint8 (N, H, W, C) with C in 1, 3, 4 (one size for the batch).
        step: the summary step (the callback's 1-based epoch).
        count: write at most this many of the N images.

    Returns:
        True where a default writer took the summary (`tf.summary.write`'s answer).

    Example:
        >>> with tf.summary.create_file_writer("logs/images").as_default():
        ...     write_images("figure", render(fig)[None], step=1)
    """
    pixels = tf.convert_to_tensor(pixels, tf.uint8)
    encoded = [tf.image.encode_png(image) for image in pixels[:count]]
    size = [tf.as_string(tf.shape(pixels)[2]), tf.as_string(tf.shape(pixels)[1])]
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
    return tf.summary.write(tag, tf.stack(size + encoded), step=step, metadata=metadata)


def _rendered(figures):
    """Figures as one uint8 batch (N, H, W, 3), smaller ones padded with white."""
    images = [render(fig) for fig in figures]
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    batch = np.full((len(images), height, width, 3), 255, np.uint8)
    for i, image in enumerate(images):
        batch[i, :image.shape[0], :image.shape[1]] = image
    return batch


def _layers(layers, option):
    if layers is None:
        return []
    if isinstance(layers, str):
        return [layers]
    layers = list(layers)
    if not all(isinstance(layer, str) for layer in layers):
        raise KvisError(f"TensorBoardImages: {option} takes a layer path or a list of them; "
                        f"got {layers!r}")
    return layers


def _epoch_set(epochs, run_epochs):
    """The chosen 1-based epochs as a set (None: every epoch), checked against the run."""
    if epochs is None:
        return None
    epochs = [epochs] if isinstance(epochs, Integral) else list(epochs)
    if not epochs or any(isinstance(e, bool) or not isinstance(e, Integral) or e < 1
                         for e in epochs):
        raise KvisError(f"TensorBoardImages: epochs are 1-based whole numbers >= 1; got "
                        f"{epochs!r}")
    late = sorted(e for e in epochs if run_epochs is not None and e > run_epochs)
    if late:
        raise KvisError(f"TensorBoardImages: epochs {late} lie past the run of {run_epochs} "
                        f"epochs")
    return {int(e) for e in epochs}


def _writer(folder):
    try:
        check_writable(folder / ".kvis-probe")
    except KvisError as error:
        raise KvisError(f"TensorBoardImages cannot write to log_dir {folder.parent}: "
                        f"{str(error).split(': ', 1)[-1]}") from None
    return tf.summary.create_file_writer(str(folder))
