"""The private Keras API kvis relies on is checked in one place, with a one-line refusal."""

import keras
import pytest

from kvis.core import keras_internals
from kvis.core.errors import KvisError
from kvis.core.graph import model_graph


def test_the_installed_keras_is_supported():
    keras_internals.check_keras()


def test_an_unsupported_keras_is_refused_with_the_range_and_the_version(monkeypatch):
    monkeypatch.setattr(keras, "version", lambda: "3.99.0")
    with pytest.raises(KvisError) as error:
        keras_internals.check_keras()
    message = str(error.value)
    assert "kvis needs Keras >=3.15,<3.16; found Keras 3.99.0" in message
    assert "\n" not in message


def test_a_keras_without_the_graph_walk_is_refused_not_called_subclassed(monkeypatch):
    from conftest import tiny_cnn

    model = tiny_cnn("fresh")
    owner = next(cls for cls in keras_internals.Functional.__mro__
                 if "_run_through_graph" in vars(cls))
    monkeypatch.delattr(owner, "_run_through_graph")
    keras_internals._checked.cache_clear()
    try:
        with pytest.raises(KvisError, match=r"kvis needs Keras >=3.15,<3.16; found Keras "):
            model_graph(model)
    finally:
        keras_internals._checked.cache_clear()


def test_functional_and_sequential_models_have_a_graph_and_subclassed_ones_do_not():
    from conftest import tiny_cnn

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert keras_internals.has_graph(tiny_cnn())
    assert keras_internals.has_graph(keras.Sequential([keras.Input((2,)),
                                                       keras.layers.Dense(1)]))
    assert not keras_internals.has_graph(Subclassed())
