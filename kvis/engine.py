"""The image-optimization engine shared by activation maximization and network inversion.

A batch of images is optimized against an objective by gradient ascent (GradientTape, Adam),
compiled with `tf.function` (optionally XLA), several steps per call. Each image has its own
random stream, seeded by the caller, for its starting noise and its per-step transforms, and
Adam works element by element: an image's result depends on its seed and unit alone, not on
the rest of the batch. Readability comes from the parameterization (Fourier-space,
colour-decorrelated: Olah et al. 2017), random jitter, scale and rotation each step
(transformation robustness), multi-scale octaves, periodic blur, gradient normalization, and
regularizer objectives (Lp decay, total variation).
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.errors import KvisError
from kvis.graph import model_graph, probe
from kvis.models import preprocessing_for
from kvis.objectives import lp_norm, total_variation
from kvis.progress import progress_bar
from kvis.runner import quiet_retracing
from kvis.vocabulary import PARAMETERIZATIONS

# Square root of the colour correlation of ImageNet images (Olah et al., Lucid): optimizing in
# this decorrelated space spreads each step's change over natural colour directions.
_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                        np.float32)
_COLOUR = _COLOUR_SQRT / np.max(np.linalg.norm(_COLOUR_SQRT, axis=0))


@dataclass(frozen=True)
class Settings:
    """How images are optimized; `default_settings(model)` picks values that read well.

    Attributes:
        steps: gradient steps in all (split over the octaves).
        learning_rate: Adam's step size.
        parameterization: "fft" (Fourier-space, colour-decorrelated) or "pixel".
        noise: standard deviation of the starting parameters: 0.2 gives pixel noise of
            about 0.05 around mid-gray, enough that few ReLU units start dead (at Lucid's
            0.01, 10 of the demo's 64 block2_conv2 filters never moved off zero).
        jitter: random translation each step, up to this many pixels.
        scale: random scaling each step, by a factor in [1 - scale, 1 + scale].
        rotate: random rotation each step, up to this many degrees either way.
        octaves: optimize at this many sizes, growing by `octave_scale`, coarse first.
        octave_scale: size ratio between octaves.
        blur_every: blur the image every this many steps (0: never).
        blur_sigma: that blur's Gaussian sigma in pixels.
        decay: weight of the L2 decay regularizer.
        tv: weight of the total-variation regularizer.
        normalize_gradients: divide each image's gradient by its RMS before Adam.
        jit_compile: compile the step with XLA (on a GPU, usually faster).
        chunk: steps per compiled call (the progress bar moves once per chunk).
    """

    steps: int = 256
    learning_rate: float = 0.05
    parameterization: str = "fft"
    noise: float = 0.2
    jitter: int = 8
    scale: float = 0.1
    rotate: float = 10.0
    octaves: int = 1
    octave_scale: float = 1.4
    blur_every: int = 0
    blur_sigma: float = 0.5
    decay: float = 0.0
    tv: float = 0.0
    normalize_gradients: bool = False
    jit_compile: bool = False
    chunk: int = 16

    def replace(self, **changes):
        """A copy with some settings changed; unknown names raise KvisError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise KvisError(f"unknown settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Render:
    """Optimized images.

    Attributes:
        images: float32 (B, H, W, C) in [0, 1], RGB or grayscale.
        scores: float32 (B,) the objective (without the settings' regularizers) on the final
            images, untransformed.
        history: float32 (chunks, B) the objective after each chunk of steps.
    """

    images: np.ndarray
    scores: np.ndarray
    history: np.ndarray


def default_settings(model, size=None, **changes):
    """Settings that read well for `model` at image `size` (default: the model's input).

    Transforms scale with the image: VGG16 and ResNet50 at 224 px get 8 px jitter, 10 degree
    rotation and 10% scaling; the 28 px demo model 1 px, 5 degrees and 5%.
    """
    size = _sizes(model, size)[0]
    small = max(size) < 64
    settings = Settings(jitter=max(1, round(max(size) / 28)), rotate=5.0 if small else 10.0,
                        scale=0.05 if small else 0.1)
    return settings.replace(**changes)


def render(model, objective, *, seeds, settings=None, size=None, labels=None, progress=True):
    """Optimize one image per seed to maximize `objective`.

    Args:
        model: a Keras model.
        objective: a `kvis.objectives.Objective`, scored per image.
        seeds: one seed per image (an int or a tuple of ints); it fixes the image's noise and
            transforms, so the same seed and unit give the same image in any batch.
        settings: a `Settings` (default: `default_settings(model, size)`).
        size: `(height, width)` of the optimized images; default the model's input size. The
            images are resized to the model's input where it is fixed.
        labels: a name per image, for error messages.
        progress: show progress (see `kvis.progress`).

    Returns:
        A `Render`.

    The images are optimized as RGB (or grayscale) pixels in [0, 1] and fed to the model
    through its own preprocessing (`kvis.models.preprocessing_for`).

    Raises:
        KvisError: the objective diverged (NaN or infinite) for some image, bad settings, or
            kvis cannot tell the model's preprocessing.
    """
    settings = settings or default_settings(model, size)
    if settings.parameterization not in PARAMETERIZATIONS:
        raise KvisError(f"unknown parameterization {settings.parameterization!r}; choose from "
                        f"{', '.join(PARAMETERIZATIONS)}")
    image_size, model_size = _sizes(model, size)
    channels = model.input_shape[-1]
    regularized = objective
    if settings.decay:
        regularized = regularized - settings.decay * lp_norm(2)
    if settings.tv:
        regularized = regularized - settings.tv * total_variation()
    bound, plain = regularized.bind(model_graph(model)), objective.bind(model_graph(model))
    if not bound.layers:
        raise KvisError(f"objective {objective.name} reads no layer: add a unit to maximize")
    step = _Step(probe(model, bound.layers), bound, plain, preprocessing_for(model), model_size)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    labels = labels or [f"image {i}" for i in range(len(rngs))]
    history, images = [], None
    octave_steps = _split(settings.steps, settings.octaves)
    with quiet_retracing(), progress_bar(settings.steps, "optimizing", unit="step",
                                         progress=progress) as bar:
        for octave, steps in enumerate(octave_steps):
            shape = _octave_size(image_size, settings.octave_scale,
                                 settings.octaves - 1 - octave) + (channels,)
            param = _PARAMETERIZATIONS[settings.parameterization](rngs, shape, settings.noise)
            if images is not None:
                param.assign_image(tf.image.resize(images, shape[:2]))
            moves = _moves(rngs, steps, shape[:2], settings)
            run = step.compile(param, moves, settings)
            done, chunk = 0, settings.blur_every or settings.chunk
            while done < steps:
                count = min(chunk, steps - done)
                scores = run(tf.constant(done), tf.constant(count)).numpy()
                _check_finite(scores, labels)
                history.append(scores)
                done += count
                if settings.blur_every and done < steps:
                    param.assign_image(_blur(param.image(), settings.blur_sigma))
                bar.update(count)
            images = param.image()
    final = step.evaluate(images).numpy()
    _check_finite(final, labels)
    return Render(images.numpy(), final, np.array(history))


class _Step:
    """One compiled optimization loop per octave, for one objective on one model."""

    def __init__(self, probe_model, bound, plain, preprocess, model_size):
        self.probe, self.bound, self.plain = probe_model, bound, plain
        self.preprocess, self.model_size = preprocess, model_size

    def outputs(self, moved):
        if tuple(moved.shape[1:3]) != self.model_size:
            moved = tf.image.resize(moved, self.model_size)
        return self.probe(self.preprocess(moved * 255.0), training=False)

    def evaluate(self, images):
        return self.plain.score(self.outputs(images), images)

    def compile(self, param, moves, settings):
        moment1 = tf.Variable(tf.zeros_like(param.variable))
        moment2 = tf.Variable(tf.zeros_like(param.variable))
        transforms = any((settings.jitter, settings.scale, settings.rotate))

        @tf.function(jit_compile=settings.jit_compile)
        def run(start, count):
            scores = tf.zeros(tf.shape(param.variable)[:1])
            for i in tf.range(start, start + count):
                with tf.GradientTape() as tape:
                    images = param.image()
                    moved = _transform(images, moves[:, i]) if transforms else images
                    scores = self.bound.score(self.outputs(moved), images)
                    loss = -tf.reduce_sum(scores)
                gradient = tape.gradient(loss, param.variable)
                if settings.normalize_gradients:
                    gradient = gradient / (_rms(gradient) + 1e-8)
                _adam(param.variable, moment1, moment2, gradient, i + 1, settings.learning_rate)
            return scores

        return run


def _adam(variable, moment1, moment2, gradient, t, learning_rate, b1=0.9, b2=0.999):
    """One element-wise Adam step (Kingma & Ba 2015); batch entries never interact."""
    t = tf.cast(t, tf.float32)
    moment1.assign(b1 * moment1 + (1 - b1) * gradient)
    moment2.assign(b2 * moment2 + (1 - b2) * tf.square(gradient))
    corrected = learning_rate * tf.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    variable.assign_sub(corrected * moment1 / (tf.sqrt(moment2) + 1e-8))


class _Pixels:
    """Each pixel a variable, squashed into [0, 1] by a sigmoid."""

    def __init__(self, rngs, shape, noise):
        self.variable = tf.Variable(np.stack([rng.normal(0, noise, shape) for rng in rngs])
                                    .astype(np.float32))

    def image(self):
        return tf.sigmoid(self.variable)

    def assign_image(self, images):
        self.variable.assign(_logit(images))


class _Spectrum:
    """Fourier coefficients scaled by 1/frequency, in decorrelated colour (Olah et al. 2017)."""

    def __init__(self, rngs, shape, noise):
        height, width, channels = shape
        self.size = (height, width)
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.rfftfreq(width)[None, :]
        frequencies = np.sqrt(fx ** 2 + fy ** 2)
        self.scale = tf.constant(1.0 / np.maximum(frequencies, 1.0 / max(height, width))
                                 * math.sqrt(height * width), tf.complex64)
        coefficients = (channels, height, width // 2 + 1, 2)
        self.variable = tf.Variable(
            np.stack([rng.normal(0, noise, coefficients) for rng in rngs]).astype(np.float32))

    def image(self):
        spectrum = tf.complex(self.variable[..., 0], self.variable[..., 1]) * self.scale
        planes = tf.signal.irfft2d(spectrum, fft_length=self.size)  # (B, C, H, W)
        return tf.sigmoid(_to_rgb(tf.transpose(planes, (0, 2, 3, 1)) / 4.0))

    def assign_image(self, images):
        planes = tf.transpose(_from_rgb(_logit(images)) * 4.0, (0, 3, 1, 2))
        spectrum = tf.signal.rfft2d(planes, fft_length=self.size) / self.scale
        self.variable.assign(tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)], -1))


_PARAMETERIZATIONS = {"fft": _Spectrum, "pixel": _Pixels}


def _to_rgb(values):
    if values.shape[-1] != 3:
        return values
    return tf.einsum("bhwc,dc->bhwd", values, tf.constant(_COLOUR))


def _from_rgb(values):
    if values.shape[-1] != 3:
        return values
    return tf.einsum("bhwc,dc->bhwd", values, tf.constant(np.linalg.inv(_COLOUR)))


def _logit(images):
    images = tf.clip_by_value(tf.convert_to_tensor(images, tf.float32), 1e-4, 1 - 1e-4)
    return tf.math.log(images / (1 - images))


def _moves(rngs, steps, size, settings):
    """Per image and step: (dy, dx, scale, degrees), drawn from each image's own stream."""
    moves = []
    for rng in rngs:
        shift = rng.integers(-settings.jitter, settings.jitter + 1, (steps, 2))
        zoom = rng.uniform(1 - settings.scale, 1 + settings.scale, (steps, 1))
        angle = rng.uniform(-settings.rotate, settings.rotate, (steps, 1))
        moves.append(np.concatenate([shift, zoom, angle], axis=1))
    return tf.constant(np.stack(moves).astype(np.float32))  # (B, steps, 4)


def _transform(images, moves):
    """Shift, scale and rotate each image about its centre, sampling bilinearly.

    Written with gathers rather than ImageProjectiveTransform, which XLA cannot compile.
    Borders mirror, so no constant frame leaks into the image.
    """
    height, width = images.shape[1:3]
    dy, dx, zoom, degrees = (m[:, None, None] for m in tf.unstack(moves, axis=1))
    radians = degrees * (math.pi / 180.0)
    cos, sin = tf.cos(radians) / zoom, tf.sin(radians) / zoom
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32),
                             np.arange(width, dtype=np.float32), indexing="ij")
    # Each output pixel reads from its position moved back by the shift, then rotated
    # and scaled about the centre.
    y = rows - (height - 1) / 2.0 - dy
    x = cols - (width - 1) / 2.0 - dx
    source_x = _mirror(cos * x + sin * y + (width - 1) / 2.0, width)
    source_y = _mirror(-sin * x + cos * y + (height - 1) / 2.0, height)
    return _bilinear(images, source_y, source_x)


def _mirror(coordinate, size):
    """Fold coordinates into [0, size - 1] by mirroring at the borders."""
    if size == 1:
        return tf.zeros_like(coordinate)
    period = 2.0 * (size - 1)
    folded = tf.math.floormod(coordinate, period)
    return tf.where(folded > size - 1, period - folded, folded)


def _bilinear(images, y, x):
    """Sample images (B, H, W, C) at real-valued positions y, x (B, H', W')."""
    height, width = images.shape[1:3]
    y0, x0 = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]

    def at(row, col):
        row = tf.clip_by_value(tf.cast(row, tf.int32), 0, height - 1)
        col = tf.clip_by_value(tf.cast(col, tf.int32), 0, width - 1)
        return tf.gather_nd(images, tf.stack([row, col], axis=-1), batch_dims=1)

    top = (1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1)
    bottom = (1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)
    return (1 - wy) * top + wy * bottom


def _blur(images, sigma):
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
    channels = images.shape[-1]
    kernel = tf.constant(np.tile(kernel[:, :, None, None], (1, 1, channels, 1)), tf.float32)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")


def _rms(gradient):
    return tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=tf.range(1, tf.rank(gradient)),
                                  keepdims=True))


def _check_finite(scores, labels):
    bad = [label for label, score in zip(labels, scores) if not np.isfinite(score)]
    if bad:
        raise KvisError(f"the optimization diverged (NaN or infinite objective) for "
                        f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                        "try a lower learning rate")


def _sizes(model, size):
    """(image size, model input size) as (height, width) pairs."""
    fixed = tuple(model.input_shape[1:3])
    if size is None and None in fixed:
        size = (224, 224)
    image_size = tuple(size) if size is not None else fixed
    if min(image_size) < 8:
        raise KvisError(f"image size {image_size} is too small; use at least 8x8")
    return image_size, image_size if None in fixed else fixed


def _octave_size(size, ratio, level):
    return tuple(max(8, round(s / ratio ** level)) for s in size)


def _split(steps, parts):
    return [steps // parts + (1 if i < steps % parts else 0) for i in range(parts)]
