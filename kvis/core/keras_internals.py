"""Everything kvis takes from Keras beyond its public API, in one place.

kvis relies on two private parts of Keras 3, both checked against the tested range below:
- `Functional._run_through_graph(inputs, operation_fn)`: walks a Functional model's graph
  calling `operation_fn(op)` in place of each operation; `kvis.core.graph` replays models with
  it so that inner layers of nested models become reachable.
- a layer's `__dict__` holds its whole state (weights, configuration) and its call history
  lives in `_inbound_nodes`/`_outbound_nodes`; `twin` copies the one and resets the other.

A Keras outside the tested range fails with one line naming the range and the version found.
"""

import functools

import keras
from keras.src.models.functional import Functional

from kvis.core.errors import KvisError

# The Keras versions kvis is tested with (setup.cfg pins the same range).
SUPPORTED = ((3, 15), (3, 16))
SUPPORTED_TEXT = "Keras >=3.15,<3.16"


def check_keras():
    """Refuse a Keras whose private API kvis cannot rely on.

    Raises:
        KvisError: the installed Keras is outside `SUPPORTED`, or lacks what kvis uses.
    """
    _checked(keras.version())


@functools.cache
def _checked(version):
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    low, high = SUPPORTED
    if not low <= numbers < high or not hasattr(Functional, "_run_through_graph"):
        raise KvisError(f"kvis needs {SUPPORTED_TEXT}; found Keras {version} "
                        "(pip install 'keras>=3.15,<3.16')")


def has_graph(model):
    """Whether `model` is a Functional or Sequential model (a graph kvis can replay)."""
    return isinstance(model, (keras.Sequential, Functional))


def run_through_graph(model, inputs, operation_fn):
    """Call `operation_fn(op)(*args, **kwargs)` for every operation of a Functional model, in
    graph order, on `inputs`; returns the model's outputs."""
    check_keras()
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def twin(layer, **changes):
    """A layer object that shares `layer`'s state (weight variables, configuration) but not
    its call history, with some attributes changed (e.g. `activation=keras.activations.linear`).

    Calling the twin on symbolic tensors adds nodes to the twin alone, and changing its
    attributes leaves the caller's layer untouched; weight updates of either are seen by both.
    """
    copy = object.__new__(type(layer))
    copy.__dict__.update(layer.__dict__)
    copy.__dict__.update(_inbound_nodes=[], _outbound_nodes=[], **changes)
    return copy
