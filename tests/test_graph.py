import keras
import numpy as np
import pytest
from conftest import nested_functional, nested_sequential, tiny_base

from kvis.core.errors import KvisError
from kvis.core.graph import layer_paths, model_graph, probe
from kvis.core.keras_internals import twin


@pytest.mark.parametrize("wrap", [nested_sequential, nested_functional])
def test_nested_layers_are_reachable_by_path(wrap, images):
    base = tiny_base()
    model = wrap(base)
    outputs = probe(model, ["base/conv2", "base/pool1", "head"])(images)
    inner_alone = keras.Model(base.input, base.get_layer("conv2").output)(images)
    np.testing.assert_allclose(outputs["base/conv2"], inner_alone, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs["head"], model(images), rtol=1e-6, atol=1e-6)
    assert outputs["base/pool1"].shape == (2, 8, 8, 4)


@pytest.mark.parametrize("wrap", [nested_sequential, nested_functional])
def test_paths_list_inner_layers_in_order(wrap):
    model = wrap(tiny_base())
    assert layer_paths(model) == ["base/conv1", "base/pool1", "base/conv2", "base", "gap", "head"]


def test_unique_suffix_resolves_to_the_nested_layer():
    model = nested_sequential(tiny_base())
    assert model_graph(model).node("conv2").path == "base/conv2"


def test_probe_leaves_the_callers_model_unchanged(tmp_path, images):
    model = nested_functional(tiny_base())
    before = model(images)
    weights = [w.copy() for w in model.get_weights()]
    layers_before = list(model.layers)
    probe(model, ["base/conv1", "gap"])(images)
    assert model.layers == layers_before
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(before, model(images))
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(images), before, rtol=1e-6)


def test_replay_adds_no_node_to_the_callers_layers(images):
    model = nested_functional(tiny_base())
    every = [layer for layer in model.layers] + list(model.get_layer("base").layers)
    nodes = {id(layer): (len(layer._inbound_nodes), len(layer._outbound_nodes))
             for layer in every}
    probe(model, ["base/conv1", "base/conv2", "head"])(images)
    assert {id(layer): (len(layer._inbound_nodes), len(layer._outbound_nodes))
            for layer in every} == nodes


def test_twin_changes_an_attribute_without_touching_the_layer(tiny, images):
    layer = tiny.get_layer("conv1")
    linear = twin(layer, activation=keras.activations.linear)
    assert layer.activation.__name__ == "relu" and linear.kernel is layer.kernel
    pre = np.asarray(linear(images))
    assert (pre < 0).any()
    np.testing.assert_allclose(np.maximum(pre, 0), layer(images), rtol=1e-6, atol=1e-6)


def test_graph_and_probe_are_safe_from_several_threads(images):
    from concurrent.futures import ThreadPoolExecutor

    model = nested_sequential(tiny_base())
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda _: probe(model, ["base/conv2"])(images)["base/conv2"],
                                range(8)))
    assert len({id(model_graph(model)) for _ in range(3)}) == 1
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


@pytest.mark.parametrize("problem", ["channels_first", "mixed_float16"])
def test_layouts_kvis_would_get_wrong_are_refused_by_name(problem):
    inputs = keras.Input((3, 16, 16) if problem == "channels_first" else (16, 16, 3))
    options = ({"data_format": "channels_first"} if problem == "channels_first"
               else {"dtype": "mixed_float16"})
    outputs = keras.layers.Conv2D(2, 3, name="conv", **options)(inputs)
    with pytest.raises(KvisError, match=f"layer 'conv'.*{problem.split('_')[0]}"):
        model_graph(keras.Model(inputs, outputs))


def test_probe_shares_weights_with_the_model(tiny, images):
    probed = probe(tiny, ["conv1"])
    kernel = tiny.get_layer("conv1").kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_allclose(probed(images)["conv1"],
                               keras.Model(tiny.input, tiny.get_layer("conv1").output)(images),
                               rtol=1e-6)


def test_unknown_layer_lists_the_closest_names(tiny):
    with pytest.raises(KvisError, match=r"no layer 'conv3'.*closest: conv2, conv1"):
        model_graph(tiny).node("conv3")


def test_ambiguous_suffix_is_refused():
    inputs = keras.Input((8, 8, 1))
    a = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 1, name="c")], name="a")
    b = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 1, name="c")], name="b")
    model = keras.Model(inputs, keras.layers.Add()([a(inputs), b(inputs)]))
    with pytest.raises(KvisError, match="ambiguous: a/c, b/c"):
        model_graph(model).node("c")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, x):
        return self.conv(x)


def test_subclassed_top_model_is_refused():
    model = Subclassed()
    model(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(KvisError, match="subclassed model with no layer graph"):
        model_graph(model)


def test_nested_subclassed_model_stays_one_opaque_layer(images):
    inner = Subclassed()
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(inner(inputs)))
    assert layer_paths(model) == ["subclassed", "relu"]
    np.testing.assert_allclose(probe(model, ["relu"])(images)["relu"], model(images), rtol=1e-6)


def test_several_inputs_are_refused():
    a, b = keras.Input((4, 4, 1)), keras.Input((4, 4, 1))
    with pytest.raises(KvisError, match="2 inputs"):
        model_graph(keras.Model([a, b], keras.layers.Add()([a, b])))


@pytest.mark.integration
def test_real_resnet50_base_inside_a_classifier(resnet50):
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    model = keras.Sequential([keras.Input((64, 64, 3)), base,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    out = probe(model, ["resnet50/conv5_block3_out", "resnet50/conv3_block4_out"])(x)
    alone = keras.Model(base.input, base.get_layer("conv5_block3_out").output)(x)
    np.testing.assert_allclose(out["resnet50/conv5_block3_out"], alone, rtol=1e-5, atol=1e-5)
    assert out["resnet50/conv3_block4_out"].shape == (1, 8, 8, 512)


def test_the_graph_cache_does_not_keep_models_alive():
    import gc
    import weakref

    model = tiny_base()
    model_graph(model)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
