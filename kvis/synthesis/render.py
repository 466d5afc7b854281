"""The image-optimization engine shared by activation maximization and network inversion.

A batch of images is optimized against an objective by gradient ascent (GradientTape, Adam),
compiled with `tf.function` (with XLA under `kvis.core.runner.jit_compile`), several steps
per call. Each image has its own
random stream, seeded by the caller, for its starting noise and its per-step transforms, and
Adam works element by element: an image's result depends on its seed and unit alone, not on
the rest of the batch. Readability comes from the parameterization (Fourier-space,
colour-decorrelated: Olah et al. 2017), random jitter, scale and rotation each step
(transformation robustness), multi-scale octaves, periodic blur, gradient normalization, and
regularizer objectives (Lp decay, total variation).

The optimization step and the final scoring are compiled once per model and cached
(`kvis.core.runner.compiled`), keyed by what shapes their graph: the objective's structure
(`Bound.key`), the batch and image shape, the parameterization, the model's preprocessing and
the settings that add or remove ops (transforms on or off, gradient normalization); the
runner adds the XLA switch.
Everything that changes from call to call (the units each image maximizes, inversion targets,
the starting noise, the transforms, the learning rate, Adam's state) goes in as tensors, so a
second call on the same model, layer and batch shape, for other units, traces nothing.
"""

import dataclasses
import os
import warnings
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.graph import model_graph, probe
from kvis.core.models import preprocessing_for
from kvis.core.progress import progress_bar
from kvis.core.runner import compiled, quiet_retracing
from kvis.core.vocabulary import PARAMETERIZATIONS
from kvis.synthesis import param as parameterizations
from kvis.synthesis.objectives import lp_norm, total_variation
from kvis.synthesis.transform import blur, moves, transform

# (setting, lowest value, whether the lowest itself is refused): the valid range of each number.
_RANGES = (("steps", 1, False), ("learning_rate", 0, True), ("noise", 0, False),
           ("jitter", 0, False), ("scale", 0, False), ("rotate", 0, False), ("octaves", 1, False),
           ("octave_scale", 0, True), ("blur_every", 0, False), ("blur_sigma", 0, True),
           ("decay", 0, False), ("tv", 0, False), ("chunk", 1, False))

# Peak memory of an optimization, in float32 copies of one image per image optimized: 30 were
# measured (demo model, 16 images of 1024x1024, fft and pixel parameterizations, 1.9 GiB).
_IMAGE_COPIES = 30


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
    chunk: int = 16

    def __post_init__(self):
        """Refuse settings outside their ranges (a rate of 0 or below would not maximize)."""
        for name, low, above in _RANGES:
            value = getattr(self, name)
            if not np.isfinite(value) or value < low or (above and value == low):
                raise KvisError(f"{name} must be {'above' if above else 'at least'} {low:g}; "
                                f"got {value:g}")

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
        objective: a `kvis.synthesis.objectives.Objective`, scored per image.
        seeds: one seed per image (an int or a tuple of ints); it fixes the image's noise and
            transforms, so the same seed and unit give the same image in any batch.
        settings: a `Settings` (default: `default_settings(model, size)`).
        size: `(height, width)` of the optimized images; default the model's input size. The
            images are resized to the model's input where it is fixed.
        labels: a name per image, for error messages.
        progress: show progress (see `kvis.core.progress`).

    Returns:
        A `Render`.

    The images are optimized as RGB (or grayscale) pixels in [0, 1] and fed to the model
    through its own preprocessing (`kvis.core.models.preprocessing_for`).

    Raises:
        KvisError: the objective diverged (NaN or infinite) for some image, bad settings,
            images too large for this machine's memory, or kvis cannot tell the model's
            preprocessing.

    Warns:
        UserWarning: a size more than twice or under half the model's fixed input size (the
            images are resized to the input every step: more pixels add time, not detail).
    """
    settings = settings or default_settings(model, size)
    if settings.parameterization not in PARAMETERIZATIONS:
        raise KvisError(f"unknown parameterization {settings.parameterization!r}; choose from "
                        f"{', '.join(PARAMETERIZATIONS)}")
    image_size, model_size = _sizes(model, size)
    _check_size(model, image_size, len(seeds))
    regularized = objective
    if settings.decay:
        regularized = regularized - settings.decay * lp_norm(2)
    if settings.tv:
        regularized = regularized - settings.tv * total_variation()
    bound, plain = regularized.bind(model_graph(model)), objective.bind(model_graph(model))
    if not bound.layers:
        raise KvisError(f"objective {objective.name} reads no layer: add a unit to maximize")
    passes = _Passes(model, bound, plain, settings, model_size)
    values = _values(bound)
    learning_rate = tf.constant(settings.learning_rate, tf.float32)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    labels = labels or [f"image {i}" for i in range(len(rngs))]
    history, value, param = [], None, None
    with quiet_retracing(), progress_bar(settings.steps, "optimizing", unit="step",
                                         progress=progress) as bar:
        for octave, steps in enumerate(_split(settings.steps, settings.octaves)):
            shape = _octave_size(image_size, settings.octave_scale,
                                 settings.octaves - 1 - octave) + (model.input_shape[-1],)
            previous, param = param, parameterizations.BY_NAME[settings.parameterization](shape)
            start = param.start(rngs, settings.noise)  # drawn every octave: the same streams
            value = (start if value is None else
                     param.value_of(tf.image.resize(previous.image(value), shape[:2])))
            drawn = moves(rngs, steps, settings)
            step = passes.step(param, value.shape)
            moment1 = moment2 = tf.zeros_like(value)
            done, chunk = 0, settings.blur_every or settings.chunk
            while done < steps:
                count = min(chunk, steps - done)
                value, moment1, moment2, scores = step(
                    value, moment1, moment2, drawn[:, done:done + count], done, learning_rate,
                    values)
                scores = scores.numpy()
                _check_finite(scores, labels)
                history.append(scores)
                done += count
                if settings.blur_every and done < steps:
                    value = param.value_of(blur(param.image(value), settings.blur_sigma))
                bar.update(count)
    images, final = passes.evaluate(param, value.shape)(value, _values(plain))
    _check_finite(final.numpy(), labels)
    return Render(images.numpy(), final.numpy(), np.array(history))


class _Passes:
    """The compiled passes of one render: the optimization step and the final scoring,
    each taken from the model's cache where the objective's structure is known."""

    def __init__(self, model, bound, plain, settings, model_size):
        self.model, self.bound, self.plain = model, bound, plain
        self.settings, self.model_size = settings, model_size
        self.preprocess = preprocessing_for(model)
        self.specs, self.plain_specs = _specs(bound), _specs(plain)

    def step(self, param, shape):
        """`step(value, moment1, moment2, moves, start, learning_rate, values)`: Adam steps
        on the numbers of `param`, of `shape` (B, ...), from step `start`, one per column of
        moves (B, n, 4); returns the new value and moments and the last step's scores (B,)."""
        s = self.settings
        transforms = any((s.jitter, s.scale, s.rotate))
        value = tf.TensorSpec(shape)
        signature = [value, value, value, tf.TensorSpec((shape[0], None, 4)),
                     tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.float32), self.specs]
        key = ("synthesis.step", self.bound.key, s.parameterization, param.shape, tuple(shape),
               self.model_size, self.preprocess, transforms, s.normalize_gradients, self.specs)
        return self._compiled(self.bound, key, lambda jit: _step(
            self._outputs(self.bound), _read(self.bound), param, signature, transforms,
            s.normalize_gradients, jit))

    def evaluate(self, param, shape):
        """`evaluate(value, values)`: the images (B, H, W, C) in [0, 1] that the numbers
        `value` of `param` stand for, and the plain objective (B,) on them."""
        signature = [tf.TensorSpec(shape), self.plain_specs]
        key = ("synthesis.evaluate", self.plain.key, self.settings.parameterization,
               param.shape, tuple(shape), self.model_size, self.preprocess, self.plain_specs)
        return self._compiled(self.plain, key, lambda jit: _evaluate(
            self._outputs(self.plain), _read(self.plain), param, signature, jit))

    def _compiled(self, bound, key, build):
        # A custom score's graph is unknown: its passes are traced for this call, not cached.
        return compiled(self.model, None if bound.key is None else key, build)

    def _outputs(self, bound):
        """`outputs(images)`: the layer outputs `bound` reads, of images in [0, 1]."""
        sub = probe(self.model, bound.layers)
        preprocess, model_size = self.preprocess, self.model_size

        def outputs(images):
            if tuple(images.shape[1:3]) != model_size:
                images = tf.image.resize(images, model_size)
            return sub(preprocess(images * 255.0), training=False)

        return outputs


def _evaluate(outputs, read, param, signature, jit_compile):
    @tf.function(input_signature=signature, jit_compile=jit_compile)
    def evaluate(value, values):
        images = param.image(value)
        return images, read(outputs(images), images, *values)

    return evaluate


def _step(outputs, read, param, signature, transforms, normalize, jit_compile):
    @tf.function(input_signature=signature, jit_compile=jit_compile)
    def step(value, moment1, moment2, moves, start, learning_rate, values):
        scores = tf.zeros(value.shape[:1])
        for i in tf.range(tf.shape(moves)[1]):
            with tf.GradientTape() as tape:
                tape.watch(value)
                images = param.image(value)
                moved = transform(images, moves[:, i]) if transforms else images
                scores = read(outputs(moved), images, *values)
                loss = -tf.reduce_sum(scores)
            gradient = tape.gradient(loss, value)
            if normalize:
                gradient = gradient / (_rms(gradient) + 1e-8)
            value, moment1, moment2 = _adam(value, moment1, moment2, gradient, start + i + 1,
                                            learning_rate)
        return value, moment1, moment2, scores

    return step


def _adam(value, moment1, moment2, gradient, t, learning_rate, b1=0.9, b2=0.999):
    """One element-wise Adam step (Kingma & Ba 2015); batch entries never interact. Returns
    the new value and moments."""
    t = tf.cast(t, tf.float32)
    moment1 = b1 * moment1 + (1 - b1) * gradient
    moment2 = b2 * moment2 + (1 - b2) * tf.square(gradient)
    corrected = learning_rate * tf.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    return value - corrected * moment1 / (tf.sqrt(moment2) + 1e-8), moment1, moment2


def _read(bound):
    """`read(outputs, images, *values)` of a bound objective; a score of one's own (no
    `read`) takes no values."""
    return bound.read or (lambda outputs, images: bound.score(outputs, images))


def _values(bound):
    """The tensors a compiled pass takes for `bound`'s values."""
    return tuple(tf.constant(v) for v in bound.values) if bound.read else ()


def _specs(bound):
    return tuple(tf.TensorSpec(np.shape(v), tf.as_dtype(np.asarray(v).dtype))
                 for v in (bound.values if bound.read else ()))


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


def _check_size(model, size, count):
    """Refuse `count` images of `size` that cannot fit in memory; warn when `size` is far from
    the model's fixed input size."""
    need = count * size[0] * size[1] * model.input_shape[-1] * 4 * _IMAGE_COPIES
    have = _physical_memory()
    if have and need > have:
        raise KvisError(f"{count} images of {size[0]}x{size[1]} need about {_amount(need)} "
                        f"to optimize; this machine has {_amount(have)}: use a smaller size "
                        f"(the model's input is {_input_size(model)})")
    fixed = tuple(model.input_shape[1:3])
    if None not in fixed and not 0.5 <= max(size) / max(fixed) <= 2:
        warnings.warn(f"image size {size[0]}x{size[1]} is far from the model's input "
                      f"{_input_size(model)}: the images are resized to it every step, so the "
                      "size adds time, not detail", stacklevel=3)


def _input_size(model):
    height, width = model.input_shape[1:3]
    return "any size" if None in (height, width) else f"{height}x{width}"


def _amount(size):
    """Bytes as '53,644 GiB' or '3 MiB'."""
    return f"{size / 2**30:,.0f} GiB" if size >= 2**30 else f"{size / 2**20:,.0f} MiB"


def _physical_memory():
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _octave_size(size, ratio, level):
    return tuple(max(8, round(s / ratio ** level)) for s in size)


def _split(steps, parts):
    return [steps // parts + (1 if i < steps % parts else 0) for i in range(parts)]
