"""The command that projects activations back to pixels: deconv."""

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", "-l", help="Spatial layer to project from.")
@click.option("--filter", "filters", help="Feature maps to project, e.g. 3,17 (default: --top).")
@click.option("--top", default=9, show_default=True, type=click.IntRange(1),
              help="Project the N strongest feature maps, each from its strongest activation.")
@click.option("--map", "whole_map", is_flag=True,
              help="Keep the whole feature map instead of its strongest activation.")
@click.option("--class", "classes", help="Project from class scores instead of a layer.")
@click.option("--guided", is_flag=True, help="Guided backpropagation (also gate by ReLU masks).")
@click.option("--method", type=click.Choice(["explicit", "gradient"]), default="explicit",
              show_default=True,
              help="explicit: unpooling, rectification, transposed filters; gradient: the "
                   "same as an input gradient, for any layer type.")
@common.figure_option
def deconv(model, weights, labels, image, layer, filters, top, whole_map, classes, guided, method, out,
           preprocess):
    """Project activations of IMAGE in MODEL back to pixels (Zeiler & Fergus deconvnet).

    Each projection is shown beside the image patch its activation sees (its receptive
    field).

    \b
    kvis deconv demo boot.png --layer block2_conv2 --top 9 --out deconv.png
    kvis deconv vgg16 cat.jpg --layer block5_conv3 --filter 12,40 --guided --out g.png
    kvis deconv vgg16 cat.jpg --class tabby --out class.png
    """
    from kvis.images import load_image, preprocessing_for_quietly
    from kvis.io import save_figure
    from kvis.models import class_index
    from kvis.projection import deconvnet, plot_projections

    if (layer is None) == (classes is None):
        raise click.UsageError("give --layer or --class")
    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    picture = load_image(image, net, preprocessing=preprocess)
    chosen = common.index_list(filters, "--filter")
    result = deconvnet(net, picture.x, layer, channels=chosen, top=top,
                       whole_map=whole_map, guided=guided, method=method,
                       classes=None if classes is None else [
                           class_index(net, c) for c in common.class_list(classes)])
    bgr = preprocessing_for_quietly(net, preprocess).bgr
    save_figure(plot_projections(result, picture.pixels, model=net, bgr=bgr,
                                 title=f"{picture.name}: {result.rule} from {result.layer}"), out)
    click.echo(f"wrote {out}")
