"""Commands that explain a class prediction: attention, sanity."""

from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@click.argument("image", type=click.Path())
@click.option("--method", "-m", type=click.Choice(["gradcam", "gradcam++", "scorecam",
                                                   "guided-gradcam", "saliency",
                                                   "guided-backprop", "smoothgrad", "ig"]),
              default="gradcam", show_default=True, help="Attention method.")
@click.option("--class", "classes",
              help="Class to explain, index or name (default: each image's top prediction).")
@click.option("--layer", "-l", help="Conv layer for the CAM methods (default: the last one).")
@click.option("--batch", is_flag=True,
              help="IMAGE is a folder: explain every image in it, OUT is a folder.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file; a folder with --batch.")
def attention(model, weights, labels, image, method, classes, layer, batch, out, preprocess):
    """Show which pixels drive MODEL's class score for IMAGE, overlaid on the image.

    \b
    kvis attention demo boot.png --method gradcam --out cam.png
    kvis attention resnet50 cat.jpg --method scorecam --class tabby --out cam.png
    kvis attention simpsons.keras photos/ --batch --method gradcam++ --out cams/
    """
    import numpy as np

    from kvis.attention_maps import attention as explain
    from kvis.attention_maps import overlay, plot_attention
    from kvis.images import load_image
    from kvis.io import save_figure, write_image
    from kvis.models import class_names

    net = common.load_network(model, weights, labels, preprocess)
    sources = common.image_folder(image) if batch else [Path(image)]
    pictures = [load_image(source, net, preprocessing=preprocess) for source in sources]
    result = explain(net, np.concatenate([p.x for p in pictures]), method,
                     classes=None if classes is None else common.class_list(classes)[0],
                     layer=layer)
    names = class_names(net)
    if not batch:
        save_figure(plot_attention(pictures[0].pixels[None], result, class_names=names,
                                   title=f"{pictures[0].name}: {result.method}"),
                    common.figure_path(out))
        click.echo(f"wrote {out}")
        return
    for picture, heatmap, cls in zip(pictures, result.maps, result.classes):
        target = Path(out) / f"{Path(picture.name).stem}_{method}.png"
        write_image(target, overlay(picture.pixels, heatmap))
        click.echo(f"{picture.name}: class #{cls}{' ' + names[cls] if names else ''} -> {target}")


@main.command()
@common.model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--methods", default="saliency,guided-backprop,gradcam,ig", show_default=True,
              help="Comma-separated attention methods to check.")
@click.option("--class", "classes", help="Class to explain (default: the top prediction).")
@click.option("--layers", help="Randomize down to these layers only (default: every "
                               "weighted layer), comma-separated.")
@common.figure_option
def sanity(model, weights, labels, image, methods, classes, layers, out, preprocess):
    """Check that attention maps depend on the model (Adebayo et al. 2018).

    The weighted layers are re-initialized from the top down, one after another, and each
    method's map is compared with its original (rank correlation). A faithful method's
    correlation falls; the model's weights are restored afterwards.
    """
    from kvis.attention_maps import METHODS, method_functions
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.models import resolve_classes
    from kvis.sanity import cascading_randomization, plot_sanity_check

    out = common.figure_path(out)
    chosen = [m.strip() for m in methods.split(",")]
    if unknown := [m for m in chosen if m not in METHODS]:
        raise click.BadParameter(f"unknown method {unknown[0]!r}; choose from "
                                 f"{', '.join(METHODS)}", param_hint="--methods")
    net = common.load_network(model, weights, labels, preprocess)
    picture = load_image(image, net, preprocessing=preprocess)
    wanted = resolve_classes(net, picture.x,
                             None if classes is None else common.class_list(classes)[0])
    result = cascading_randomization(
        net, picture.x, method_functions(chosen, classes=wanted),
        layers=None if layers is None else [name.strip() for name in layers.split(",")])
    save_figure(plot_sanity_check(result, title=f"{picture.name}: cascading randomization"),
                out)
    click.echo("rank correlation with the original map after randomizing down to each layer:")
    for name, row in zip(result.methods, result.correlations):
        click.echo(f"  {name:16} " + " ".join(f"{value:5.2f}" for value in row))
    click.echo(f"wrote {out}")
