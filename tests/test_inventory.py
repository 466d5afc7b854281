import pytest
from conftest import nested_sequential, ops_model, tiny_base

from kvis.core.graph import model_graph
from kvis.layers.inventory import format_layer_table, layer_table
from kvis.layers.receptive_fields import ReceptiveField


def test_inventory_rows_hold_the_layer_facts(tiny):
    rows = {row.path: row for row in layer_table(tiny)}
    assert list(rows) == ["conv1", "pool1", "conv2", "gap", "predictions"]
    assert rows["conv1"].params == 3 * 3 * 3 * 4 + 4
    assert rows["conv2"].output_shape == (None, 6, 6, 6) and rows["conv2"].type == "Conv2D"
    assert rows["pool1"].receptive_field == ReceptiveField((4, 4), (2, 2), (0.5, 0.5))
    assert rows["gap"].receptive_field is None


def test_inventory_opens_nested_models():
    rows = layer_table(nested_sequential(tiny_base()))
    assert [row.path for row in rows][:4] == ["base/conv1", "base/pool1", "base/conv2", "base"]
    assert rows[3].params == sum(row.params for row in rows[:3])


def test_table_text_is_aligned(tiny):
    lines = format_layer_table(layer_table(tiny)).splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "params", "RF", "size",
                                "RF", "stride", "RF", "offset"]
    assert lines[3].split() == ["conv2", "Conv2D", "(None,", "6,", "6,", "6)", "222", "8x8",
                                "2x2", "2.5,2.5"]
    assert len({line.index("Conv2D") for line in lines if "Conv2D" in line}) == 1


def test_operation_nodes_are_rows_without_weights():
    model = ops_model()
    rows = layer_table(model)
    assert sum(row.params for row in rows) == model.count_params()
    ops = [row for row in rows if row.type.endswith(" (op)")]
    assert {row.type for row in ops} == {"Add (op)", "Multiply (op)", "Mean (op)",
                                          "Sigmoid (op)"}
    assert all(row.params == 0 for row in ops)
    assert {row.path: row.params for row in rows}["separable"] == 5 * 5 * 4 + 4 * 4 + 4
    assert format_layer_table(rows).count("(op)") == len(ops)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "convnext_tiny"])
def test_applications_with_operation_nodes_get_their_table(name, request):
    model = request.getfixturevalue(name)
    rows = layer_table(model)
    graph = model_graph(model)
    assert len(rows) == len(graph.nodes)
    assert sum(row.params for row in rows if not graph.nodes[row.path].is_container) \
        == model.count_params()
    ops = [row for row in rows if row.type.endswith(" (op)")]
    assert ops and all(row.params == 0 for row in ops)
    assert all(row.receptive_field is not None for row in rows if len(row.output_shape) == 4)
