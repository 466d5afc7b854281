"""`kvis features`: the feature maps an image produces, strongest first."""

import time
from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import RANKINGS


@main.command()
@common.model_options
@common.image_argument
@common.layer_option("A layer's name or path: OUT is a figure file.")
@common.layers_option("Comma-separated layers: OUT is a folder with a figure per layer.")
@click.option("--all", "all_layers", is_flag=True,
              help="Every layer with spatial output: OUT is a folder.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file for --layer; a folder for --layers or --all.")
@common.count_option("Show the N strongest maps of each layer.", default=16)
@common.channels_option("Show these channels instead of the strongest.")
@click.option("--rank-by", type=click.Choice(RANKINGS), default="mean", show_default=True,
              help="Score that ranks the maps.")
@click.option("--summary", is_flag=True, help="Summarise each layer instead of showing maps.")
@common.save_maps_option
def features(model, weights, labels, preprocess, image, layer, layers, all_layers, out, count,
             channels, rank_by, summary, save_maps):
    """Draw the feature maps IMAGE produces in MODEL, strongest first.

    With --layer, OUT is a figure file. With --layers or --all, OUT is a folder that receives
    one figure per layer and overview.png, which shows the input and every stage of the
    network (the last layer at each resolution).

    \b
    kvis features demo boot.png --layer block2_conv1 --out maps.png
    kvis features vgg16 cat.jpg --layers block1_conv2,block3_conv3 --out cat_maps/
    kvis features vgg16 cat.jpg --all --out cat_maps/
    """
    from kvis.core.images import load_image
    from kvis.core.io import save_figure
    from kvis.core.progress import progress_bar
    from kvis.layers.feature_maps import (
        feature_maps,
        plot_feature_maps,
        plot_feature_overview,
        plot_layer_summary,
    )

    if sum((layer is not None, layers is not None, all_layers)) != 1:
        raise click.UsageError("give one of --layer, --layers or --all")
    folder = None if layer else common.writable(Path(out) / "overview.png").parent
    out = common.figure_path(out) if folder is None else None
    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    began = time.perf_counter()
    maps = feature_maps(net, load_image(image, net), None if all_layers else layers or [layer])
    computed = time.perf_counter() - began
    common.save_maps(maps_file, maps)

    def draw(path):
        if summary:
            return plot_layer_summary(maps, layer=path)
        return plot_feature_maps(maps, layer=path, count=count, channels=channels,
                                 rank_by=rank_by)

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
