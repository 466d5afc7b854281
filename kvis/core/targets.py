"""What a technique explains: one target, compiled into one score pass.

A target is, per image, one number to explain:
- a class of a classifier: each image's top class or given classes, scored as the logit
  (a final softmax is bypassed, the model unchanged) or the softmax probability;
- an objective (`kvis.objectives`): a channel or a neuron of a layer, a layer's energy, or
  any sum of those (Captum's layer and neuron attributions, tf-keras-vis's scores);
- a callable on the model's output, `f(output) -> (N,)`: a regression output, one head, a
  region of a segmentation map.

`score_pass` builds the compiled pass every technique shares: it probes the layers the
technique needs, scores the target and, on request, takes the gradient of the summed score to
the input or to a probed layer, with every ReLU's backward pass following a rule
(`kvis.core.backward_rules`). Passes are cached per model and key (`kvis.core.runner`).
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kvis.core.anatomy import check_score, class_scores, require_classifier
from kvis.core.backward_rules import forward_values, relu_following
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph, probe
from kvis.core.models import class_indices, class_label
from kvis.core.runner import compiled, rows_within, run_batches


@dataclass(frozen=True)
class Target:
    """One number per image to explain.

    Attributes:
        classes: int64 (N,) the class of each image, or None for each image's top class
            (found in the same pass); None too when `objective` is set.
        score: "logit" or "probability" for a class; "target" for an objective or callable.
        objective: an object with `bind(graph)` (a `kvis.objectives.Objective`), or None.
        name: how figures and titles name the target when it is not a class.
    """

    classes: np.ndarray | None
    score: str
    objective: object = None
    name: str = ""

    @property
    def is_class(self):
        return self.objective is None

    def rows(self, images):
        """The class input of a pass for rows made from the images at `images` (int (B,)),
        as a tuple: empty unless classes are given."""
        if self.classes is None:
            return ()
        return (self.classes[np.asarray(images)].astype(np.int32),)

    def labels(self, model, classes):
        """What each image's explanation is of: class names, or the target's name."""
        if self.is_class:
            return [class_label(model, int(c)) for c in classes]
        return [self.name] * len(classes)


class _Output:
    """A callable on the model's output, as an objective: binds to the last layer."""

    def __init__(self, function):
        self.function = function
        self.name = getattr(function, "__name__", "output")

    def bind(self, graph):
        path = next(reversed(graph.nodes))
        return _Bound((path,), lambda outputs, images: self.function(outputs[path]))

    def __eq__(self, other):
        return isinstance(other, _Output) and other.function is self.function

    def __hash__(self):
        return hash(self.function)


@dataclass(frozen=True)
class _Bound:
    """A callable target bound to a model: no structure key, so its pass is its own."""

    layers: tuple
    score: object
    key: object = None


def make_target(model, count, *, classes=None, score="logit", target=None, purpose):
    """The checked `Target` of a call on `count` images.

    Args:
        model: a Keras model (a classifier unless `target` is given).
        count: the number of images.
        classes: None (each image's top class), one class (index or name) for all images, or
            one per image.
        score: "logit" or "probability", for classes.
        target: an objective (`kvis.objectives.channel(...)`, `neuron(...)`) or a callable
            on the model's output giving (N,); explains that instead of a class.
        purpose: the technique, for messages.

    Raises:
        KvisError: both classes and a target, a target that is neither, an unknown score,
            a model that is not a classifier, an unknown class.
    """
    if target is None:
        check_score(score)
        require_classifier(model, purpose)
        return Target(class_indices(model, classes, count), score)
    if classes is not None:
        raise KvisError(f"{purpose}: give classes or a target, not both")
    if hasattr(target, "bind"):
        objective = target
    elif callable(target):
        objective = _Output(target)
    else:
        raise KvisError(f"{purpose}: a target is an objective (kvis.objectives.channel, "
                        f"neuron, ...) or a callable on the model's output; got "
                        f"{type(target).__name__}")
    objective.bind(model_graph(model))  # checks layers and unit indices now
    return Target(None, "target", objective, objective.name)


def score_pass(model, target, *, layers=(), gradient=None, rule=None, every_score=False,
               layer_sums=False):
    """The compiled pass of a target: `step(images, *target.rows(...)) -> dict`; with no
    target, the probe of `layers`: `step(images) -> {path: output}`.

    The dict holds "scores" float32 (N,), the target's score per image; for class targets
    "classes" int64 (N,) the class scored and, with `every_score`, "every_score" (N, K) every
    class's score; each path of `layers` with its output (N, h, w, c), or its sum over the
    positions (N, c) with `layer_sums`; with `gradient`, "gradient": d sum(scores) / d
    input (`gradient="input"`) or / d the output of the layer path given.

    Args:
        model: a Keras model.
        target: a `Target` (`make_target`), or None to read layers only.
        layers: layer paths whose outputs to return.
        gradient: None, "input", or a path of `layers`.
        rule: None to run the model as it is, or a backward rule ("gradient", "guided",
            "deconvnet") that every ReLU's backward pass follows (for input gradients).
        every_score: also return every class's score (class targets).
        layer_sums: return the layers' outputs summed over positions.
    """
    bound = None if target is None or target.is_class else \
        target.objective.bind(model_graph(model))
    fed = () if bound is None or bound.key is None else tuple(
        tf.constant(value) for value in bound.values)
    if target is None:
        key = ("layers", tuple(layers), layer_sums)
    else:
        # An objective is keyed by its structure (its values are fed as tensors, so other
        # channels reuse the pass); one without a structure key, by itself.
        what = target.objective if bound is None or bound.key is None else (
            bound.key, tuple((value.shape, value.dtype) for value in fed))
        key = ("score", target.score, what, target.classes is None, tuple(layers), gradient,
               rule, every_score, layer_sums)
    step = compiled(model, key, lambda jit: _build(model, target, bound, fed, tuple(layers),
                                                   gradient, rule, every_score, layer_sums, jit))
    return step if not fed else lambda *inputs: step(*inputs, *fed)


def _build(model, target, bound, fed, layers, gradient, rule, every_score, layer_sums, jit):
    graph = model_graph(model)
    if target is None:
        needed = ()
    elif bound is None:
        head, read = class_scores(graph, target.score)
        needed = (head,)
    else:
        needed = bound.layers
    paths = list(dict.fromkeys((*layers, *needed)))
    if rule is None:
        outputs_of = probe(model, paths)

        def run(images):
            return outputs_of(images, training=False)
    else:
        relu = relu_following(rule)

        def run(images):
            values = forward_values(graph, images, relu)
            return {path: values[id(graph.nodes[path].output)] for path in paths}

    def forward(images, extra):
        outputs = run(images)
        result = {path: tf.reduce_sum(outputs[path], axis=(1, 2)) if layer_sums
                  else outputs[path] for path in layers}
        if target is None:
            return result
        if bound is not None:
            result["scores"] = bound.read(outputs, images, *extra) if fed else \
                bound.score(outputs, images)
            return result
        every = read(outputs[head])
        wanted = extra[0] if extra else tf.argmax(every, axis=-1, output_type=tf.int32)
        result["scores"] = tf.gather(every, wanted, axis=1, batch_dims=1)
        result["classes"] = tf.cast(wanted, tf.int64)
        if every_score:
            result["every_score"] = every
        return result

    def traced(images, *extra):
        if gradient is None:
            return forward(images, extra)
        with tf.GradientTape() as tape:
            tape.watch(images)
            result = forward(images, extra)
            total = tf.reduce_sum(result["scores"])
        source = images if gradient == "input" else result[gradient]
        result["gradient"] = tape.gradient(total, source,
                                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return result

    specs = [tf.TensorSpec((None, *model.input_shape[1:]))]
    if target is not None and target.classes is not None:
        specs.append(tf.TensorSpec((None,), tf.int32))
    specs += [tf.TensorSpec(value.shape, value.dtype) for value in fed]
    # Plain Python control flow only: no autograph, so a KvisError while tracing stays one.
    return tf.function(traced, input_signature=specs, autograph=False, jit_compile=jit)


def resolved_classes(model, x, classes=None, *, batch_size=32):
    """One class per image: the given ones, or each image's top class (one compiled pass).

    Args:
        model: a Keras classifier.
        x: float32 (N, H, W, C), preprocessed model input.
        classes: as for `make_target`.
        batch_size: images per pass.

    Returns:
        int64 (N,).
    """
    target = make_target(model, len(x), classes=classes, purpose="the classes")
    if target.classes is not None:
        return target.classes
    return run_batches(score_pass(model, target), (np.asarray(x, np.float32),),
                       batch_size=batch_size, progress=False)["classes"]


def input_gradients(model, x, target, *, rule="gradient", batch_size=32, memory_mb=1024,
                    desc="gradients", progress=True):
    """The target's score pass with its gradient to the input, over model input `x`: the
    pass's outputs, N rows each ("gradient" float32 (N, H, W, C), "scores", "classes").

    Saliency, guided backpropagation and the deconvnet from a class are this one pass with
    the rule "gradient", "guided" or "deconvnet" at every ReLU.
    """
    return run_batches(score_pass(model, target, gradient="input", rule=rule),
                       (np.asarray(x, np.float32), *target.rows(np.arange(len(x)))),
                       batch_size=rows_within(model, memory_mb, batch_size=batch_size),
                       desc=desc, progress=progress)
