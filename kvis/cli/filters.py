"""`kvis filters`: the kernels of a conv layer as images."""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import FILTER_VIEWS


@main.command()
@common.model_options
@common.layer_option("A conv layer's name or path.", required=True)
@common.figure_option
@click.option("--mode", type=click.Choice(FILTER_VIEWS),
              default="auto", show_default=True,
              help="grid: one tile per filter (1 or 3 input channels); channels: a tile per "
                   "input channel; summary: kernel norms and the strongest filters.")
@common.count_option("Show at most this many filters.", default=64)
@click.option("--inputs", default=8, show_default=True, type=click.IntRange(1),
              help="channels mode: input channels shown per filter (the first ones).")
@common.save_maps_option
def filters(model, weights, labels, preprocess, layer, out, mode, count, inputs, save_maps):
    """Draw the filters (kernels) of a conv LAYER of MODEL.

    The kernels of a caffe-style model (VGG16, ResNet50: BGR input) are drawn in RGB.

    \b
    kvis filters vgg16 --layer block1_conv1 --out filters.png
    kvis filters demo --layer block2_conv1 --mode summary --out block2.png
    """
    from kvis.core.io import save_figure
    from kvis.layers.filters import conv_filters, plot_filters

    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    kernels = conv_filters(net, layer)
    save_figure(plot_filters(kernels, mode=mode, count=count, inputs=inputs), out)
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, kernels)
