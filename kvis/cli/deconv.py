"""`kvis deconv`: activations projected back to pixels (Zeiler & Fergus deconvnet)."""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import DECONV_METHODS


@main.command()
@common.model_options
@common.image_argument
@common.layer_option("Spatial layer to project from.")
@common.channels_option("Feature maps to project (default: the --count strongest).")
@common.count_option("Project the N strongest feature maps, each from its strongest "
                     "activation.", default=9)
@click.option("--map", "whole_map", is_flag=True,
              help="Keep the whole feature map instead of its strongest activation.")
@common.class_option("Project from class scores instead of a layer.")
@click.option("--guided", is_flag=True, help="Guided backpropagation (also gate by ReLU masks).")
@click.option("--method", type=click.Choice(DECONV_METHODS), default="explicit",
              show_default=True,
              help="explicit: unpooling, rectification, transposed filters; gradient: the "
                   "same as an input gradient, for any layer type.")
@common.figure_option
@common.save_maps_option
def deconv(model, weights, labels, preprocess, image, layer, channels, count, whole_map,
           classes, guided, method, out, save_maps):
    """Project activations of IMAGE in MODEL back to pixels (Zeiler & Fergus deconvnet).

    Each projection is shown beside the image patch its activation sees (its receptive
    field).

    \b
    kvis deconv demo boot.png --layer block2_conv2 --count 9 --out deconv.png
    kvis deconv vgg16 cat.jpg --layer block5_conv3 --channels 12,40 --guided --out g.png
    kvis deconv vgg16 cat.jpg --class tabby --out class.png
    """
    from kvis.core.images import load_image
    from kvis.core.io import save_figure
    from kvis.deconv.deconvnet import deconvnet, plot_projections

    if (layer is None) == (classes is None):
        raise click.UsageError("give --layer or --class")
    wanted = None if classes is None else common.class_list(classes)
    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    result = deconvnet(net, load_image(image, net), layer, channels=channels, count=count,
                       whole_map=whole_map, classes=wanted, guided=guided, method=method)
    save_figure(plot_projections(result), out)
    click.echo(f"{result.names[0]}: {result.rule} from {result.layer}: {', '.join(result.units)}")
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)
