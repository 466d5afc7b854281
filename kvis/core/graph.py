"""Layers by path, nested models opened up, and probes: sub-models that expose layer outputs.

Keras cannot build a sub-model from the inner layers of a nested model ("Graph disconnected"),
because the inner layers were called on the nested model's own input. kvis replays the model
instead: every layer, down through nested Functional and Sequential models, is called again
on one fresh input, so the replayed graph reaches every layer output. The calls go to *twins*
of the caller's layers: objects of the same class that share the layer's state, its weight
variables included, but keep their own call history, so the replay adds no node to the
caller's layers and leaves the caller's model exactly as it was. Inner layers are addressed
by path, `resnet50/conv5_block3_out`. Subclassed models have no graph to replay: as the top
model they are refused, nested inside another model they stay one opaque layer.

The replay walks a Functional model with a private Keras API, kept with the version check in
`kvis.core.keras_internals`.
"""

import dataclasses
import difflib
import threading
import weakref
from dataclasses import dataclass

import keras

from kvis.core.errors import KvisError
from kvis.core.keras_internals import has_graph, run_through_graph, twin

_graphs = weakref.WeakKeyDictionary()
_lock = threading.RLock()


@dataclass(frozen=True)
class Node:
    """One layer call in the replayed graph.

    Attributes:
        path: the layer's name, prefixed by the names of the models that contain it.
        layer: the caller's own layer object (read it; kvis calls `twin(layer)` instead), or
            a `keras.Operation` that is not a layer, for operations written in the model's
            code (`x + y`, `keras.ops.mean`): it holds no weights.
        inputs: the symbolic tensors the layer was called on.
        output: the symbolic tensor (or structure of tensors) the call returned.
        args, kwargs: the call's arguments, symbolic tensors included, to call it again.
    """

    path: str
    layer: keras.Operation
    inputs: tuple
    output: object
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def is_container(self):
        """A nested model: its own layers are separate nodes, and its output is theirs."""
        return isinstance(self.layer, keras.Model) and has_graph(self.layer)


@dataclass(frozen=True)
class Graph:
    """A model replayed on one fresh input, with every layer output reachable.

    Attributes:
        name: the model's name.
        input: the fresh symbolic input, shape `model.input_shape`.
        nodes: the layer calls in topological order, keyed by path.
    """

    name: str
    input: object
    nodes: dict

    def node(self, path):
        """The node at `path`; a unique suffix also works (`conv5_block3_out`).

        Raises:
            KvisError: no layer has that path; the message lists the closest paths.
        """
        if path in self.nodes:
            return self.nodes[path]
        matches = [p for p in self.nodes if p.endswith("/" + path)]
        if len(matches) == 1:
            return self.nodes[matches[0]]
        if matches:
            raise KvisError(f"layer name {path!r} is ambiguous: {', '.join(matches)}")
        close = difflib.get_close_matches(path, list(self.nodes), n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise KvisError(f"no layer {path!r} in model {self.name!r}{hint}")

    def producer(self, tensor):
        """Path of the first layer whose output is `tensor`.

        Raises:
            KvisError: `tensor` is the model input, not a layer output.
        """
        for path, node in self.nodes.items():
            if node.output is tensor:
                return path
        raise KvisError(f"model {self.name!r}: {tensor.name} is not the output of a layer")


def model_graph(model):
    """Replay `model` into a `Graph`; cached per model.

    Args:
        model: a Functional or Sequential Keras model with one image input; nested
            Functional and Sequential models inside it are opened up.

    Raises:
        KvisError: the model is subclassed, has several inputs, is channels-first, or computes
            in another dtype than float32.
    """
    with _lock:
        if model not in _graphs:
            _graphs[model] = _replay_model(model)
        return _graphs[model]


def layer_paths(model):
    """Paths of all layers of `model`, nested ones included, in topological order."""
    return list(model_graph(model).nodes)


def probe(model, paths):
    """A functional sub-model from the model's input to the outputs of the layers at `paths`.

    One forward pass of the probe yields all the requested outputs; it shares the model's
    weights and leaves the model unchanged.

    Args:
        model: a Keras model (see `graph`).
        paths: layer paths, e.g. `["block1_conv1", "resnet50/conv5_block3_out"]`.

    Returns:
        A `keras.Model` whose output is a dict `{path: tensor}` in the order of `paths`.

    Raises:
        KvisError: a path names no layer (the closest ones are listed).
    """
    g = model_graph(model)
    outputs = {path: g.node(path).output for path in paths}
    with _lock:
        return keras.Model(g.input, outputs, name=f"{model.name}_probe")


def _replay_model(model):
    if not isinstance(model, keras.Model) or not has_graph(model):
        raise KvisError(
            f"model {getattr(model, 'name', model)!r} is a subclassed model with no layer "
            "graph; kvis needs a Functional or Sequential model"
        )
    if len(model.inputs) != 1:
        raise KvisError(f"model {model.name!r} has {len(model.inputs)} inputs; kvis needs one")
    _check_layout(model)
    fresh = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype,
                        name=model.inputs[0].name)
    nodes = {}
    _replay(model, fresh, "", nodes)
    return Graph(model.name, fresh, nodes)


def _check_layout(model):
    """Refuse what kvis would get wrong: channels-first layers, and a compute dtype other
    than float32 (mixed precision)."""
    for layer in _all_layers(model):
        if getattr(layer, "data_format", None) == "channels_first":
            raise KvisError(f"model {model.name!r}: layer {layer.name!r} is channels_first; kvis "
                            "needs a channels_last model (keras.config.set_image_data_format)")
        dtype = getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
        if dtype != "float32":
            raise KvisError(f"model {model.name!r}: layer {layer.name!r} computes in {dtype} "
                            f"(dtype policy {layer.dtype_policy.name!r}); kvis needs float32: "
                            "load the model with keras.config.set_dtype_policy('float32')")


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _replay(model, inputs, prefix, nodes):
    """Call every layer of `model` again on `inputs`, recording each call under its path."""
    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = _call(layer, prefix, nodes)(x)
        return x
    return run_through_graph(model, inputs, lambda op: _call(op, prefix, nodes))


def _call(layer, prefix, nodes):
    """A stand-in for `layer` that opens nested models and records every call."""

    def call(*args, **kwargs):
        path = prefix + layer.name
        if isinstance(layer, keras.Model) and has_graph(layer):
            output = _replay(layer, args[0], path + "/", nodes)
        else:
            output = twin(layer)(*args, **kwargs)
        tensors = tuple(t for t in keras.tree.flatten((args, kwargs))
                        if isinstance(t, keras.KerasTensor))
        nodes.setdefault(path, Node(path, layer, tensors, output, args, kwargs))
        return output

    return call
