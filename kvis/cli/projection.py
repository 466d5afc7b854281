"""The command that projects activations back to pixels: deconv."""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.vocabulary import DECONV_METHODS


@main.command()
@common.model_options
@common.image_argument
@click.option("--layer", "-l", help="Spatial layer to project from.")
@click.option("--filter", "filters", help="Feature maps to project, e.g. 3,17 (default: --top).")
@click.option("--top", default=9, show_default=True, type=click.IntRange(1),
              help="Project the N strongest feature maps, each from its strongest activation.")
@click.option("--map", "whole_map", is_flag=True,
              help="Keep the whole feature map instead of its strongest activation.")
@click.option("--class", "classes", help="Project from class scores instead of a layer.")
@click.option("--guided", is_flag=True, help="Guided backpropagation (also gate by ReLU masks).")
@click.option("--method", type=click.Choice(DECONV_METHODS), default="explicit",
              show_default=True,
              help="explicit: unpooling, rectification, transposed filters; gradient: the "
                   "same as an input gradient, for any layer type.")
@common.figure_option
def deconv(model, weights, labels, preprocess, image, layer, filters, top, whole_map, classes,
           guided, method, out):
    """Project activations of IMAGE in MODEL back to pixels (Zeiler & Fergus deconvnet).

    Each projection is shown beside the image patch its activation sees (its receptive
    field).

    \b
    kvis deconv demo boot.png --layer block2_conv2 --top 9 --out deconv.png
    kvis deconv vgg16 cat.jpg --layer block5_conv3 --filter 12,40 --guided --out g.png
    kvis deconv vgg16 cat.jpg --class tabby --out class.png
    """
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.projection import deconvnet, plot_projections

    if (layer is None) == (classes is None):
        raise click.UsageError("give --layer or --class")
    chosen = common.index_list(filters, "--filter")
    wanted = None if classes is None else common.class_list(classes)
    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    result = deconvnet(net, load_image(image, net), layer, channels=chosen, top=top,
                       whole_map=whole_map, classes=wanted, guided=guided, method=method)
    save_figure(plot_projections(result), out)
    click.echo(f"{result.name}: {result.rule} from {result.layer}: {', '.join(result.units)}")
    click.echo(f"wrote {out}")
