"""Commands that look at a model and an image: layers, filters, features, demo-images."""

import re
import time
from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.vocabulary import FILTER_VIEWS, RANKINGS


@main.command()
@click.argument("model")
def layers(model):
    """List every layer of MODEL: type, output shape, parameters, receptive field.

    The receptive field of a spatial layer is the size of the input patch one unit sees, the
    stride between neighbouring units, and the centre of unit (0, 0), all in input pixels.
    Weights are not loaded: the inventory needs only the architecture.
    """
    from kvis.inventory import format_layer_table, layer_table

    click.echo(format_layer_table(layer_table(common.load_network(model, "none"))))


@main.command()
@common.model_options
@click.option("--layer", "-l", required=True, help="A conv layer's name or path.")
@common.figure_option
@click.option("--mode", type=click.Choice(FILTER_VIEWS),
              default="auto", show_default=True,
              help="grid: one tile per filter (1 or 3 input channels); channels: a tile per "
                   "input channel; summary: kernel norms and the strongest filters.")
@click.option("--max-filters", default=64, show_default=True, type=click.IntRange(1),
              help="Show at most this many filters.")
def filters(model, weights, labels, preprocess, layer, out, mode, max_filters):
    """Draw the filters (kernels) of a conv LAYER of MODEL.

    The kernels of a caffe-style model (VGG16, ResNet50: BGR input) are drawn in RGB.

    \b
    kvis filters vgg16 --layer block1_conv1 --out filters.png
    kvis filters demo --layer block2_conv1 --mode summary --out block2.png
    """
    from kvis.filters import conv_filters, plot_filters
    from kvis.io import save_figure

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    save_figure(plot_filters(conv_filters(net, layer), mode=mode, max_filters=max_filters), out)
    click.echo(f"wrote {out}")


@main.command()
@common.model_options
@common.image_argument
@click.option("--layer", "-l", "layer_names", multiple=True,
              help="A layer's name or path; repeat for several layers.")
@click.option("--all", "all_layers", is_flag=True, help="Every layer with spatial output.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file for one layer; a folder for several layers or --all.")
@click.option("--top", default=16, show_default=True, type=click.IntRange(1),
              help="Show the N strongest maps of each layer.")
@click.option("--channels", help="Show these channels instead, e.g. 3,17,40-47.")
@click.option("--rank-by", type=click.Choice(RANKINGS), default="mean", show_default=True,
              help="Score that ranks the maps.")
@click.option("--summary", is_flag=True, help="Summarise each layer instead of showing maps.")
def features(model, weights, labels, preprocess, image, layer_names, all_layers, out, top,
             channels, rank_by, summary):
    """Draw the feature maps IMAGE produces in MODEL, strongest first.

    With one --layer, OUT is a figure file. With several --layer options or --all, OUT is a
    folder that receives one figure per layer and overview.png, which shows the input and
    every stage of the network (the last layer at each resolution).

    \b
    kvis features demo boot.png --layer block2_conv1 --out maps.png
    kvis features vgg16 cat.jpg --all --out cat_maps/
    """
    from kvis.features import (
        feature_maps,
        plot_feature_maps,
        plot_feature_overview,
        plot_layer_summary,
    )
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.progress import progress_bar

    if all_layers == bool(layer_names):
        raise click.UsageError("give either --layer (one or more) or --all")
    chosen = common.index_list(channels, "--channels")
    folder = None if len(layer_names) == 1 else common.writable(Path(out) / "overview.png").parent
    out = common.figure_path(out) if folder is None else None
    net = common.load_network(model, weights, labels, preprocess)
    began = time.perf_counter()
    maps = feature_maps(net, load_image(image, net), None if all_layers else layer_names)
    computed = time.perf_counter() - began

    def draw(path):
        if summary:
            return plot_layer_summary(maps, path)
        return plot_feature_maps(maps, path, top=top, channels=chosen, rank_by=rank_by)

    if folder is None:
        save_figure(draw(next(iter(maps))), out)
        click.echo(f"wrote {out}")
        return
    with progress_bar(len(maps), "drawing", unit="figure") as bar:
        for i, path in enumerate(maps):
            save_figure(draw(path), folder / f"{i:03d}_{path.replace('/', '__')}.png")
            bar.update(1)
    save_figure(plot_feature_overview(maps), folder / "overview.png")
    click.echo(f"wrote {len(maps)} layer figures and overview.png to {folder} (feature maps "
               f"{computed:.1f} s, drawing {time.perf_counter() - began - computed:.1f} s)")


@main.command("demo-images")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--per-class", default=1, show_default=True, type=click.IntRange(1, 40),
              help="Images of each of the 10 classes.")
def demo_images_command(folder, per_class):
    """Write real Fashion-MNIST test images that ship with kvis into FOLDER, as PNG files.

    They are the demo model's inputs: kvis features demo FOLDER/0_ankle_boot.png ...
    """
    import numpy as np

    from kvis.demo import CLASS_NAMES, demo_images
    from kvis.io import write_image

    images, labels = demo_images()
    written = 0
    for label, name in enumerate(CLASS_NAMES):
        slug = re.sub(r"[^a-z0-9]+", "_", name)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            write_image(Path(folder) / f"{i}_{slug}.png", images[index])
            written += 1
    click.echo(f"wrote {written} images to {folder}")
