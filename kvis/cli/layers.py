"""`kvis layers`: the layer table of a model."""

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@click.argument("model", type=common.ModelSpec())
def layers(model):
    """List every layer of MODEL: type, output shape, parameters, receptive field.

    The receptive field of a spatial layer is the size of the input patch one unit sees, the
    stride between neighbouring units, and the centre of unit (0, 0), all in input pixels.
    Weights are not loaded: the inventory needs only the architecture.
    """
    from kvis.layers.inventory import format_layer_table, layer_table

    click.echo(format_layer_table(layer_table(common.load_network(model, "none"))))
