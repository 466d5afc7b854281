"""Commands that explain a class prediction: attention, sanity."""

import re
from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.vocabulary import ATTENTION_METHODS


@main.command()
@common.model_options
@click.argument("image", type=click.Path(exists=True))
@click.option("--method", "-m", type=click.Choice(ATTENTION_METHODS), default="grad-cam",
              show_default=True, help="Attention method.")
@common.score_option()
@click.option("--class", "classes",
              help="Class to explain, index or name (default: each image's top prediction); "
                   "with --batch, one for all images or one per image.")
@click.option("--layer", "-l", help="Conv layer for the CAM methods (default: the last one).")
@click.option("--batch", is_flag=True,
              help="IMAGE is a folder: explain every image in it, OUT is a folder.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file; a folder with --batch.")
def attention(model, weights, labels, preprocess, image, method, score, classes, layer, batch,
              out):
    """Show which pixels drive MODEL's class score for IMAGE, overlaid on the image.

    With --batch, every image of the folder IMAGE gets a figure OUT/<image>_<class>_<method>.png
    titled with the image and class names.

    \b
    kvis attention demo boot.png --method grad-cam --out cam.png
    kvis attention resnet50 cat.jpg --method score-cam --class tabby --out cam.png
    kvis attention simpsons.keras photos/ --batch --method grad-cam++ --out cams/
    """
    from kvis.attention_maps import attention as explain
    from kvis.attention_maps import plot_attention
    from kvis.images import load_image
    from kvis.io import save_figure

    sources = common.image_folder(image) if batch else [Path(image)]
    out = common.writable(Path(out) / "overlay.png").parent if batch else common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    chosen = None if classes is None else common.class_list(classes)
    result = explain(net, [load_image(source, net) for source in sources], method,
                     classes=chosen[0] if chosen and len(chosen) == 1 else chosen,
                     score=score, layer=layer)
    if not batch:
        save_figure(plot_attention(result), out)
        where = f" at {result.layer}" if result.layer else ""
        click.echo(f"{_line(result, 0)}: {method}{where}")
        click.echo(f"wrote {out}")
        return
    for i, name in enumerate(result.names):
        label = result.class_labels[i]
        target = out / f"{Path(name).stem}_{_file_part(label)}_{method}.png"
        save_figure(plot_attention(result[i], title=f"{name}: {label} ({method})",
                                   tile_inches=1.6), target)
        click.echo(f"{_line(result, i)} -> {target}")


def _line(result, i):
    """'boot.png: ankle boot (logit 7.21)'."""
    return f"{result.names[i]}: {result.class_labels[i]} ({result.score} {result.scores[i]:.3f})"


def _file_part(label):
    """A class label as part of a file name: 'ankle boot' -> 'ankle_boot', '#281' -> '281'."""
    return re.sub(r"[^\w.-]+", "_", label).strip("_") or "class"


@main.command()
@common.model_options
@common.image_argument
@click.option("--methods", default="saliency,guided-backprop,grad-cam,integrated-gradients",
              show_default=True,
              help=f"Comma-separated attention methods to check: {', '.join(ATTENTION_METHODS)}.")
@common.score_option()
@click.option("--class", "classes", help="Class to explain (default: the top prediction).")
@click.option("--layers", help="Randomize down to these layers only (default: every "
                               "weighted layer), comma-separated.")
@common.figure_option
def sanity(model, weights, labels, preprocess, image, methods, score, classes, layers, out):
    """Check that attention maps depend on the model (Adebayo et al. 2018).

    The weighted layers of a copy of MODEL are re-initialized from the top down, one after
    another, and each method's map is compared with its original (rank correlation). A
    faithful method's correlation falls.
    """
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.sanity import cascading_randomization, plot_sanity_check

    out = common.figure_path(out)
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if unknown := [m for m in chosen if m not in ATTENTION_METHODS]:
        raise click.BadParameter(f"unknown method {unknown[0]!r}; choose from "
                                 f"{', '.join(ATTENTION_METHODS)}", param_hint="--methods")
    net = common.load_network(model, weights, labels, preprocess)
    picture = load_image(image, net)
    checkpoints = None if layers is None else [name.strip() for name in layers.split(",")]
    result = cascading_randomization(
        net, picture, chosen, classes=None if classes is None else common.class_list(classes)[0],
        score=score, layers=checkpoints)
    save_figure(plot_sanity_check(
        result, title=f"{picture.name}: cascading randomization, {result.class_labels[0]} "
                      f"({result.score})"), out)
    click.echo(f"rank correlation with the original map after randomizing down to each layer "
               f"({result.class_labels[0]}, {result.score}):")
    for name, row in zip(result.methods, result.correlations):
        click.echo(f"  {name:20} " + " ".join(f"{value:5.2f}" for value in row))
    click.echo(f"wrote {out}")
