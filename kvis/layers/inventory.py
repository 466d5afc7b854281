"""The layer inventory: every layer with its type, output shape, parameters and receptive field."""

from dataclasses import dataclass

import keras

from kvis.core.graph import model_graph
from kvis.layers.receptive_fields import receptive_fields


@dataclass(frozen=True)
class LayerInfo:
    """One row of the inventory.

    Attributes:
        path: layer path (nested layers as `resnet50/conv1_conv`).
        type: the layer's class name; an operation that is not a layer (`x + y`, `keras.ops`
            in the model's code) is marked, e.g. "Add (op)".
        output_shape: output shape with None for the batch (and any free) dimension.
        params: number of weights, trainable or not (0 for an operation).
        receptive_field: a `ReceptiveField` for spatial outputs, else None.
    """

    path: str
    type: str
    output_shape: tuple
    params: int
    receptive_field: object


def layer_table(model):
    """Every layer of `model`, nested models opened up, in topological order.

    Returns:
        A list of `LayerInfo`.
    """
    fields = receptive_fields(model)
    return [
        LayerInfo(path, _type(node.layer), _shape(node.output), _params(node.layer),
                  fields[path])
        for path, node in model_graph(model).nodes.items()
    ]


def _type(layer):
    name = type(layer).__name__
    return name if isinstance(layer, keras.layers.Layer) else f"{name} (op)"


def _params(layer):
    """Weights of a layer; an operation node (keras.ops) holds none."""
    return layer.count_params() if isinstance(layer, keras.layers.Layer) else 0


def format_layer_table(rows):
    """The inventory as aligned text columns, for a terminal."""
    header = ("layer", "type", "output shape", "params", "RF size", "RF stride", "RF offset")
    lines = [header] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def _cells(row):
    rf = row.receptive_field
    spatial = ("", "", "") if rf is None else (
        "x".join(str(v) for v in rf.size),
        "x".join(str(v) for v in rf.stride),
        ",".join(f"{v:g}" for v in rf.offset),
    )
    shape = "(" + ", ".join(str(d) for d in row.output_shape) + ")"
    return (row.path, row.type, shape, f"{row.params:,}", *spatial)


def _shape(output):
    return tuple(output.shape) if hasattr(output, "shape") else ()
