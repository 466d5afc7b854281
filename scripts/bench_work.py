"""One benchmark process: some libraries' rows for one model, written as JSON to `--out`.

Run by `scripts/benchmark.py`, in the kvis environment (library "kvis") or in the peers'
environment (keract, tf-keras-vis, tf-explain), where `TF_USE_LEGACY_KERAS=1` makes `tf.keras`
the tf-keras package for the peers that need Keras 2. It imports no kvis outside the kvis
rows, and builds every model with `tf.keras` and random weights, so each library times the
same network on the same inputs.

Each row: the fastest of `repeats` timed calls after one warm-up call (more while they add up
to under `SHORT` seconds; 2 calls where one call took over `LONG` seconds, 1 where one took
over `VERY_LONG`), the work done (images, optimization steps, or occluder positions), the time
the model itself needs for that work (its "limit": forward or forward+backward passes at the
same batch size, compiled; a run of passes as long as the call, timed after each call, so that
the machine's drift cancels from the ratio; scores that need a pass of their own count one
forward pass where the library computes them: kvis's maximization scores its final images and
its SmoothGrad the clean images, the peers score neither), and the peak resident memory of the
process during the row. A maximization row warms up on other filters than it times: a fresh
call on an already-used model, which must trace nothing. The occlusion rows of VGG16 and
ResNet50 time each occluder of `SETTINGS` in each of `OCCLUSION_WAYS`, and record the inference
kvis ran, its fallback layer and the error of its sensitivity map against the full
recomputation's (`kvis.attribution.occlusion.measured_error`).

With `--memory TECHNIQUE` the process does that one thing once and reports its peak resident
memory (VmHWM, the kernel's high-water mark, so one process per measurement): "model" (the
model's own footprint: built, then one compiled forward+backward pass at the technique's batch
size), "smoothgrad" or "integrated-gradients" (kvis, on `MEMORY["images"]` images, with
`memory_mb=MEMORY["memory_mb"]` where the function takes it).
"""

import argparse
import inspect
import json
import math
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras

# Fixed settings per model: a batch for the per-image techniques, the conv layer whose filters
# are maximized, maximization steps for 1 and for 16 filters, SmoothGrad samples, the occluder
# (size = stride, as tf-explain slides it), the occluders (size, stride) timed full against
# incremental, the images of the dataset scan, and Score-CAM's images and channels (None: all;
# else the channels of largest variance, tf-keras-vis's max_N) at the last conv layer.
SETTINGS = {
    "demo": dict(batch=64, layer="block3_conv1", steps={1: 16, 16: 64}, samples=16, patch=4,
                 occluders=(), scan=4096, score_cam=(8, None)),
    "vgg16": dict(batch=4, layer="block5_conv3", steps={1: 16, 16: 2}, samples=4, patch=32,
                  occluders=((16, 8), (32, 16)), scan=32, score_cam=(1, 64)),
    "resnet50": dict(batch=4, layer="conv5_block3_out", steps={1: 16, 16: 2}, samples=4,
                     patch=32, occluders=((16, 8), (32, 16)), scan=32, score_cam=(1, 64)),
}

# The memory rows (`--memory`): SmoothGrad and Integrated Gradients at full size, and the
# budget passed as `memory_mb=` to the functions that take it.
MEMORY = dict(images=32, samples=50, steps=128, batch=32, memory_mb=1024)

# Occlusion's ways for the occluders of SETTINGS: the full recomputation, exact incremental
# inference, and Krypton's two approximations.
OCCLUSION_WAYS = (("full", dict(incremental=False)),
                  ("incremental exact", dict(incremental=True)),
                  ("threshold 0.4", dict(incremental=True, threshold=0.4)),
                  ("drill-down 0.25", dict(incremental=True, drill_down=0.25)))

LONG, VERY_LONG = 5.0, 60.0
SHORT, MOST = 2.0, 25  # short rows: calls until 2 s in all, at most 25 (a burst spares some)
SPAN = 10.0  # the longest run of limit passes timed after a call


def build(name):
    """The model, random weights, with `tf.keras` (Keras 3, or tf-keras under legacy mode)."""
    keras.utils.set_random_seed(0)
    if name == "vgg16":
        return keras.applications.VGG16(weights=None)
    if name == "resnet50":
        return keras.applications.ResNet50(weights=None)
    # The architecture of kvis's demo model (kvis.core.demo.build_demo_model), built here with
    # tf.keras so that tf-keras peers get the same network.
    conv = dict(kernel_size=3, padding="same", activation="relu")
    inputs = keras.Input((28, 28, 1), name="input")
    x = inputs
    for block, (filters, count) in enumerate(((32, 2), (64, 2), (128, 1)), 1):
        for i in range(1, count + 1):
            x = keras.layers.Conv2D(filters, name=f"block{block}_conv{i}", **conv)(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="kvis_demo")


class PeakMemory:
    """The largest resident set size of this process while the block runs, in MB (sampled
    every 5 ms; on a GPU, TensorFlow's own peak of GPU:0 is read instead)."""

    def __enter__(self):
        self.peak, self._running = _rss_mb(), True
        self._gpu = bool(tf.config.list_logical_devices("GPU"))
        if self._gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *error):
        self._running = False
        self._thread.join()
        if self._gpu:
            self.peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.005)


def _rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb():
    """The process's peak resident memory so far (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def timed(repeats, function, *args, warm=None, limit=(), **kwargs):
    """`(fastest seconds, peak MB, limit seconds)` of `function(*args, **kwargs)` over
    `repeats` calls after a warm-up call (`warm()` where given, else the same call), more
    while the calls have taken under `SHORT` seconds in all (at most `MOST` calls): at most 2
    calls once a call (the warm-up included) has taken over `LONG` seconds, 1 once one has
    taken over `VERY_LONG`.

    `limit` is the model's own work for the same result, `[(passes, pace)]` with `pace` one
    pass (`Limits.pace`). After each call, each pace runs as many passes in a row as the work
    needs, but for no longer than the call (at most `SPAN` seconds): the row and its limit are
    timed together, over stretches of the same length, so that the machine's drift and bursts
    of load (10-30% on a shared machine) cancel from their ratio. The limit is the sum of
    passes x the fastest seconds per pass (None without a limit). The fastest call, not the
    median: load from other work only ever slows a call down."""
    start = time.perf_counter()
    warm() if warm else function(*args, **kwargs)
    longest, times = time.perf_counter() - start, []
    per_pass = [_seconds_of(pace, 2)[-1] for _, pace in limit]  # warm, then one pass
    paces = [[] for _ in limit]
    with PeakMemory() as memory:
        while len(times) < (1 if longest > VERY_LONG else 2 if longest > LONG else repeats) \
                or (sum(times) < SHORT and len(times) < MOST):
            start = time.perf_counter()
            function(*args, **kwargs)
            times.append(time.perf_counter() - start)
            longest = max(longest, times[-1])
            for (passes, pace), one, spent in zip(limit, per_pass, paces):
                run = max(1, min(math.ceil(passes), round(min(times[-1], SPAN) / one)))
                spent.append(sum(_seconds_of(pace, run)) / run)
    seconds = sum(passes * min(spent) for (passes, _), spent in zip(limit, paces))
    return min(times), memory.peak, seconds if limit else None


def _seconds_of(pace, count):
    """The seconds of each of `count` passes run in a row."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        pace()
        seconds.append(time.perf_counter() - start)
    return seconds


class Limits:
    """The model's own speed: compiled forward, and forward+backward (the input gradient of
    one output), passes at a given batch size."""

    def __init__(self, model, repeats, jit):
        self.model, self.repeats, self.jit, self._steps = model, repeats, jit, {}

    def pace(self, kind, batch, model=None):
        """One pass, "forward" or "backward", of `batch` images: a callable for `timed`."""
        model = model or self.model
        key = (kind, model.name, batch)
        if key not in self._steps:
            x = tf.constant(inputs(model, batch))
            step = (_forward if kind == "forward" else _backward)(model, self.jit)
            self._steps[key] = lambda: step(x).numpy()
        return self._steps[key]

    def work(self, batch, *, forward=0, backward=0, model=None):
        """A row's limit for `timed`: `forward` forward passes and `backward` forward+backward
        passes of `batch` images (of `model`, default the model's own)."""
        return [(passes, self.pace(kind, batch, model)) for kind, passes in
                (("forward", forward), ("backward", backward)) if passes]

    def seconds(self, kind, batch):
        """The fastest seconds of one pass of `batch` images, timed on its own."""
        return timed(self.repeats, self.pace(kind, batch))[0]


def _forward(model, jit):
    return tf.function(lambda x: tf.reduce_sum(model(x, training=False)), jit_compile=jit)


def _backward(model, jit):
    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(tf.reduce_max(tf.reshape(model(x, training=False),
                                                           (tf.shape(x)[0], -1)), axis=-1))
        return tape.gradient(total, x)

    return step


def inputs(model, batch, seed=0):
    shape = (batch, *model.input_shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def conv_names(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def last_conv(model):
    """The layer the CAMs explain: the last conv layer (ResNet50's last block output)."""
    return "conv5_block3_out" if model.name == "resnet50" else conv_names(model)[-1]


def _score_cam_work(model, settings):
    """Score-CAM's row: its technique name, images, channels kept (None: all), and the
    masked images it scores (images x channels)."""
    images, count = settings["score_cam"]
    channels = count or model.get_layer(last_conv(model)).output.shape[-1]
    name = f"score-cam, {channels} channels" + ("" if count else " (all)")
    return name, images, count, images * channels


def _memory_for(model, rows):
    """The `memory_mb` that lets one kvis pass hold `rows` rows: SmoothGrad's rows run in
    passes of the size the peers use (all of a batch's noisy copies at once)."""
    from kvis.core.runner import floats_per_row

    return int(np.ceil(rows * 4 * floats_per_row(model) / 2 ** 20))


def trunk(model, layer):
    """The model up to `layer`: what maximizing one of its filters runs through."""
    return keras.Model(model.input, model.get_layer(layer).output, name=f"to_{layer}")


def maximization_work(limits, count, steps, to_layer, scored=True):
    """Maximizing `count` filters: forward+backward passes of the model cut at the layer, one
    per step, and, where the library scores the final images (`scored`), one forward pass."""
    return limits.work(count, backward=steps, forward=int(scored), model=to_layer)


def attribution_work(limits, method, settings, scored=True):
    """A gradient method on a batch: one forward+backward pass (SmoothGrad: one per sample,
    and, where the library scores the clean images (`scored`), one forward pass)."""
    if method == "smoothgrad":
        return limits.work(settings["batch"], backward=settings["samples"],
                           forward=int(scored))
    return limits.work(settings["batch"], backward=1)


def row(technique, library, work, seconds, peak, limit_seconds, note="", judged=True):
    """One row; `judged=False`: its work is more than its limit's passes (the scan's
    statistics), so its fraction of the limit is shown but not held to the target."""
    return dict(technique=technique, library=library, work=work, seconds=seconds,
                limit_seconds=limit_seconds, peak_mb=peak, note=note, judged=judged)


def kvis_rows(model, name, settings, limits, repeats, jit, only=None):
    from kvis.core.runner import jit_compile

    with jit_compile(jit):  # every kvis pass, as `kvis --xla`
        return _kvis_rows(model, name, settings, limits, repeats, only)


def _kvis_rows(model, name, settings, limits, repeats, only):
    import kvis
    from kvis.synthesis.render import default_settings

    kvis.configure_model(model, preprocessing="unit" if name == "demo" else "caffe")
    batch, x = settings["batch"], inputs(model, settings["batch"])
    convs = conv_names(model)
    rows = []
    if wanted(only, "feature maps"):
        seconds, peak, limit = timed(repeats, kvis.feature_maps, model, x, convs,
                                     batch_size=batch, progress=False,
                                     limit=limits.work(batch, forward=1))
        rows.append(row(f"feature maps, {len(convs)} conv layers", "kvis", f"{batch} images",
                        seconds, peak, limit))
    to_layer = trunk(model, settings["layer"])
    for count, steps in settings["steps"].items():
        technique = f"maximize {count} filter{'s' * (count > 1)}"
        if not wanted(only, technique):
            continue
        options = default_settings(model, steps=steps)
        # The warm-up maximizes other filters: the timed call is a fresh call on a model
        # already used, as a user's second call is.
        seconds, peak, limit = timed(repeats, kvis.maximize_filters, model, settings["layer"],
                                     range(count), settings=options, progress=False,
                                     warm=lambda o=options, c=count: kvis.maximize_filters(
                                         model, settings["layer"], range(c, 2 * c),
                                         settings=o, progress=False),
                                     limit=maximization_work(limits, count, steps, to_layer))
        rows.append(row(technique, "kvis", f"{steps} steps", seconds, peak, limit))
    rows += _kvis_attribution_rows(model, settings, limits, repeats, only)
    return rows


def _kvis_attribution_rows(model, settings, limits, repeats, only):
    import kvis

    batch, x = settings["batch"], inputs(model, settings["batch"])
    rows = []
    for method in ("saliency", "smoothgrad", "grad-cam"):
        if not wanted(only, method):
            continue
        options = {} if method != "smoothgrad" else dict(
            samples=settings["samples"], memory_mb=_memory_for(model, batch * settings["samples"]))
        seconds, peak, limit = timed(repeats, kvis.attention, model, x, method, classes=0,
                                     batch_size=batch, progress=False,
                                     limit=attribution_work(limits, method, settings), **options)
        rows.append(row(method, "kvis", f"{batch} images", seconds, peak, limit))
    technique, images, count, masked = _score_cam_work(model, settings)
    if wanted(only, technique):
        seconds, peak, limit = timed(repeats, kvis.score_cam, model, x[:images],
                                     classes=0, score="probability", layer=last_conv(model),
                                     count=count, batch_size=batch, progress=False,
                                     limit=limits.work(batch, forward=masked / batch))
        rows.append(row(technique, "kvis", f"{masked} masked images", seconds, peak, limit))
    rows += _kvis_occlusion_rows(model, settings, limits, repeats, only)
    data = inputs(model, settings["scan"], seed=1)
    for technique, statistics in (("top-9 scan, stage layers", False),
                                  ("top-9 scan and statistics, stage layers", True)):
        if wanted(only, technique):
            seconds, peak, limit = timed(repeats, kvis.scan, model, data, batch_size=batch,
                                         statistics=statistics, progress=False,
                                         limit=limits.work(batch,
                                                           forward=settings["scan"] / batch))
            rows.append(row(technique, "kvis", f"{settings['scan']} images", seconds, peak,
                            limit, judged=not statistics))
    return rows


def _kvis_occlusion_rows(model, settings, limits, repeats, only):
    """Occlusion at tf-explain's setting (size = stride, kvis's default inference), then each
    occluder of the settings in each of `OCCLUSION_WAYS`, with the error of its sensitivity map
    against the full recomputation's."""
    from kvis.attribution.occlusion import measured_error

    patch = settings["patch"]
    ways = [(patch, patch, "auto", {})] if wanted(only, f"occlusion, {patch} px") else []
    ways += [(size, stride, way, options) for size, stride in settings["occluders"]
             for way, options in OCCLUSION_WAYS
             if wanted(only, _occlusion_name(size, stride, way))]
    rows, exact = [], {}
    for size, stride, way, options in ways:
        seconds, peak, limit, result = _timed_occlusion(model, settings, limits, repeats,
                                                        size, stride, options)
        if way == "full":
            exact[size, stride] = result
        if way != "auto" and (size, stride) not in exact:  # --only left the full row out
            exact[size, stride] = _occlusion(model, settings, size, stride, incremental=False)
        entry = row(_occlusion_name(size, stride, way), "kvis",
                    f"{_positions(model, size, stride)} positions", seconds, peak, limit)
        entry.update(occluder=[size, stride], way=way, inference=result.inference,
                     fallback=result.fallback)
        if way not in ("auto", "full"):
            entry["error"] = measured_error(result.sensitivity,
                                            exact[size, stride].sensitivity)
        rows.append(entry)
    return rows


def _timed_occlusion(model, settings, limits, repeats, size, stride, options):
    """`(seconds, peak MB, limit seconds, the last result)` of one occlusion row: one forward
    pass per position. The full recomputation warms up on 4 positions: the same compiled pass
    as the timed call's, in a fraction of its time."""
    results = []
    side = model.input_shape[1]
    warm = None if options.get("incremental", True) else (
        lambda: _occlusion(model, settings, size, side - size, **options))
    batch = settings["batch"]
    seconds, peak, limit = timed(repeats, lambda: results.append(
        _occlusion(model, settings, size, stride, **options)), warm=warm,
                                 limit=limits.work(batch, forward=_positions(model, size, stride)
                                                   / batch))
    return seconds, peak, limit, results[-1]


def _occlusion(model, settings, size, stride, **options):
    """kvis's occlusion of the first benchmark image, class 0."""
    import kvis

    return kvis.occlusion(model, inputs(model, 1), size=size, stride=stride, classes=0,
                          batch_size=settings["batch"], progress=False, **options)


def _occlusion_name(size, stride, way):
    """The technique of an occlusion row: at tf-explain's setting ("auto": size = stride,
    kvis's default) only the occluder's size, else size, stride and way."""
    if way == "auto":
        return f"occlusion, {size} px"
    return f"occlusion, {size} px / stride {stride}, {way}"


def wanted(only, technique):
    """Whether `--only` (substrings of technique names; None: all) asks for this row."""
    return not only or any(part in technique for part in only)


def memory_row(model, name, technique, jit):
    """One technique's peak resident memory (VmHWM) in this fresh process: see `--memory`."""
    m = MEMORY
    x = inputs(model, m["images"])
    start = time.perf_counter()
    if technique == "model":
        _backward(model, jit)(tf.constant(x[:m["batch"]])).numpy()
        work, budget = f"{m['batch']} images", None
    else:
        import kvis

        kvis.configure_model(model, preprocessing="unit" if name == "demo" else "caffe")
        function, options, work = {
            "smoothgrad": (kvis.smoothgrad, dict(samples=m["samples"]),
                           f"{m['images']} images x {m['samples']} samples"),
            "integrated-gradients": (kvis.integrated_gradients, dict(steps=m["steps"]),
                                     f"{m['images']} images x {m['steps']} steps"),
        }[technique]
        budget = None
        if "memory_mb" in inspect.signature(function).parameters:
            options["memory_mb"] = budget = m["memory_mb"]
        function(model, x, classes=0, batch_size=m["batch"], progress=False, **options)
    seconds = time.perf_counter() - start
    return dict(technique=technique, library="model" if technique == "model" else "kvis",
                work=work, seconds=seconds, peak_mb=_hwm_mb(), budget_mb=budget,
                limit_seconds=None, note="VmHWM")


def _positions(model, size, stride):
    """Occluder positions over the model's input (kvis's and tf-explain's grids agree where
    size = stride divides the side)."""
    height, width = model.input_shape[1:3]
    return ((height - size) // stride + 1) * ((width - size) // stride + 1)


def keract_rows(model, name, settings, limits, repeats, jit, only=None):
    convs = conv_names(model)
    technique = f"feature maps, {len(convs)} conv layers"
    if not wanted(only, technique):
        return []
    import keract

    batch, x = settings["batch"], inputs(model, settings["batch"])
    seconds, peak, limit = timed(repeats, keract.get_activations, model, x, layer_names=convs,
                                 limit=limits.work(batch, forward=1))
    return [row(technique, "keract", f"{batch} images", seconds, peak, limit)]


def tf_keras_vis_rows(model, name, settings, limits, repeats, jit, only=None):
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayer, ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    batch, x = settings["batch"], inputs(model, settings["batch"])
    rows = []
    to_layer = trunk(model, settings["layer"])
    counts = [c for c in settings["steps"] if wanted(only, f"maximize {c} filter{'s' * (c > 1)}")]
    if counts:
        maximizer = ActivationMaximization(
            model, model_modifier=[ExtractIntermediateLayer(settings["layer"]),
                                   ReplaceToLinear()], clone=True)
    for count in counts:
        steps = settings["steps"][count]
        seed = tf.random.uniform((count, *model.input_shape[1:]), 0, 255, seed=0)
        seconds, peak, limit = timed(repeats, maximizer, CategoricalScore(list(range(count))),
                                     seed_input=seed, steps=steps, callbacks=[],
                                     limit=maximization_work(limits, count, steps, to_layer,
                                                            scored=False))
        rows.append(row(f"maximize {count} filter{'s' * (count > 1)}", "tf-keras-vis",
                        f"{steps} steps", seconds, peak, limit))
    score = CategoricalScore([0] * batch)
    for method, options in (("saliency", {}),
                            ("smoothgrad", {"smooth_samples": settings["samples"]})):
        if not wanted(only, method):
            continue
        saliency = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)
        seconds, peak, limit = timed(repeats, saliency, score, x, **options,
                                     limit=attribution_work(limits, method, settings,
                                                            scored=False))
        rows.append(row(method, "tf-keras-vis", f"{batch} images", seconds, peak, limit))
    if wanted(only, "grad-cam"):
        gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
        seconds, peak, limit = timed(repeats, gradcam, score, x,
                                     limit=attribution_work(limits, "grad-cam", settings))
        rows.append(row("grad-cam", "tf-keras-vis", f"{batch} images", seconds, peak, limit))
    technique, images, count, masked = _score_cam_work(model, settings)
    if wanted(only, technique):
        scorecam = Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)
        seconds, peak, limit = timed(repeats, scorecam, CategoricalScore([0] * images),
                                     x[:images], penultimate_layer=last_conv(model),
                                     seek_penultimate_conv_layer=False, batch_size=batch,
                                     max_N=count, limit=limits.work(batch, forward=masked / batch))
        rows.append(row(technique, "tf-keras-vis", f"{masked} masked images", seconds, peak,
                        limit))
    return rows


def tf_explain_rows(model, name, settings, limits, repeats, jit, only=None):
    from tf_explain.core.grad_cam import GradCAM
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity
    from tf_explain.core.smoothgrad import SmoothGrad
    from tf_explain.core.vanilla_gradients import VanillaGradients

    batch, x = settings["batch"], inputs(model, settings["batch"])
    rows = []
    for method, explainer, options in (
            ("saliency", VanillaGradients(), {}),
            ("smoothgrad", SmoothGrad(), {"num_samples": settings["samples"]}),
            ("grad-cam", GradCAM(), {"layer_name": last_conv(model)})):
        if not wanted(only, method):
            continue
        seconds, peak, limit = timed(repeats, explainer.explain, (x, None), model, 0, **options,
                                     limit=attribution_work(limits, method, settings,
                                                            scored=False))
        rows.append(row(method, "tf-explain", f"{batch} images", seconds, peak, limit))
    patch = settings["patch"]
    if wanted(only, _occlusion_name(patch, patch, "auto")):
        positions = _positions(model, patch, patch)
        seconds, peak, limit = timed(repeats, OcclusionSensitivity(batch_size=batch).explain,
                                     (x[:1], None), model, 0, patch,
                                     limit=limits.work(batch, forward=positions / batch))
        rows.append(row(_occlusion_name(patch, patch, "auto"), "tf-explain",
                        f"{positions} positions", seconds, peak, limit))
    return rows


LIBRARIES = {"kvis": kvis_rows, "keract": keract_rows, "tf-keras-vis": tf_keras_vis_rows,
             "tf-explain": tf_explain_rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(SETTINGS), required=True)
    parser.add_argument("--libraries", nargs="+", choices=list(LIBRARIES), required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile)")
    parser.add_argument("--out", type=Path, required=True, help="the rows, as JSON")
    parser.add_argument("--only", nargs="+", help="only the rows whose technique contains one "
                        "of these, e.g. 'maximize 1 filter'")
    parser.add_argument("--memory", choices=("model", "smoothgrad", "integrated-gradients"),
                        help="only this one's peak resident memory (VmHWM)")
    parser.add_argument("--rounds", type=int, default=1, help="time the rows this many times, "
                        "library after library (each row gains its `round`)")
    args = parser.parse_args()

    model = build(args.model)
    keras_version = getattr(keras, "__version__", None) or keras.__name__
    limits = Limits(model, args.repeats, args.jit)
    settings = SETTINGS[args.model]
    if args.memory:
        rows, args.libraries = [memory_row(model, args.model, args.memory, args.jit)], []
    else:
        rows = [row(technique, "model", f"{settings['batch']} images",
                    limits.seconds(kind, settings["batch"]), None, None)
                for kind, technique in (("forward", "forward pass"),
                                        ("backward", "forward+backward pass"))
                if wanted(args.only, technique)]
    for turn, library in ((turn, library) for turn in range(args.rounds)
                          for library in args.libraries):
        try:  # each library skips the rows --only leaves out
            done = LIBRARIES[library](model, args.model, settings, limits, args.repeats,
                                      args.jit, args.only)
        except Exception as error:  # a peer that does not run here: reported, not dropped
            message = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            done = [row("(all)", library, "", None, None, None, f"fails: {message}")]
        rows += [dict(entry, round=turn) for entry in done]
    for entry in rows:
        entry.update(model=args.model, keras=keras_version, jit=args.jit,
                     device=tf.config.list_logical_devices()[-1].device_type)
    args.out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
