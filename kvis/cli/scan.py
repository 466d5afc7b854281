"""Commands that scan a dataset: topk (Zeiler & Fergus Fig. 2) and stats."""

from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main


def scan_options(command):
    """DATA, --layers, --k, --batch-size, --out (a folder), --resume."""
    for option in reversed([
        click.argument("data", type=common.DataSpec()),
        click.option("--layers", "-l", help="Comma-separated spatial layers (default: the last "
                                            "layer of each resolution)."),
        click.option("--k", "k", default=9, show_default=True, type=click.IntRange(1),
                     help="Strongest activations kept per channel."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
                     help="Images per forward pass."),
        click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
                     help="Folder for the index (index.json), the checkpoint and figures."),
        click.option("--resume", is_flag=True,
                     help="Continue an interrupted scan from OUT/checkpoint.npz."),
    ]):
        command = option(command)
    return command


def run_scan(model, weights, labels, preprocess, data, layers, k, batch_size, out, resume):
    """Load the model, scan DATA with a checkpoint in OUT, write OUT/index.json."""
    from kvis.dataset_examples import write_index
    from kvis.dataset_scan import scan
    from kvis.datasets import image_source

    folder = Path(out)
    common.writable(folder / "index.json")
    net = common.load_network(model, weights, labels, preprocess)
    found = scan(net, data, None if layers is None else [n.strip() for n in layers.split(",")],
                 k=k, batch_size=batch_size, checkpoint=folder / "checkpoint.npz",
                 resume=resume)
    write_index(found, folder / "index.json", names=image_source(data).names, data=data)
    for _, name, reason in found.skipped:
        click.echo(f"skipped {name}: {reason}", err=True)
    click.echo(f"scanned {found.images} images ({len(found.skipped)} skipped) of {found.source}")
    return net, found


@main.command()
@common.model_options
@scan_options
@click.option("--channels", type=click.IntRange(1), default=16, show_default=True,
              help="Channels per layer figure, the most strongly activated first.")
def topk(model, weights, labels, preprocess, data, layers, k, batch_size, out, resume,
         channels):
    """The strongest activations of every feature map of MODEL over DATA (Zeiler & Fergus,
    Fig. 2): one streaming pass, then each activation's deconvnet projection beside its
    image patch.

    DATA is a folder of images (recursive; one subfolder per class gives labels), an
    MNIST/Fashion-MNIST IDX images file, or demo. OUT receives index.json (every channel's
    top k and statistics), checkpoint.npz (for --resume) and one figure per layer.

    \b
    kvis topk demo demo --out scan/
    kvis topk vgg16 photos/ --layers block3_conv3,block5_conv3 --out scan/ --resume
    """
    from kvis.dataset_examples import plot_top_examples, top_examples
    from kvis.io import save_figure

    net, found = run_scan(model, weights, labels, preprocess, data, layers, k, batch_size, out,
                          resume)
    for layer in found.layers:
        figure = plot_top_examples(top_examples(net, found, data, layer=layer, count=channels,
                                                batch_size=batch_size))
        target = Path(out) / f"top{k}_{layer.replace('/', '__')}.png"
        save_figure(figure, target)
        click.echo(f"wrote {target}")


@main.command()
@common.model_options
@scan_options
def stats(model, weights, labels, preprocess, data, layers, k, batch_size, out, resume):
    """Activity statistics of MODEL's channels over DATA: dead and rarely active channels, and
    the frequency content of the first layer's filters (Zeiler & Fergus, section 4.1).

    \b
    kvis stats demo demo --out scan/
    """
    from kvis.dataset_scan import RARE
    from kvis.io import save_figure
    from kvis.unit_statistics import filter_spectrum, plot_statistics

    net, found = run_scan(model, weights, labels, preprocess, data, layers, k, batch_size, out,
                          resume)
    for layer in found.layers:
        layer_stats = found.stats[layer]
        click.echo(f"{layer}: {len(layer_stats.dead)} dead "
                   f"{_indices(layer_stats.dead)}, {len(layer_stats.rare)} active at under "
                   f"{RARE:.0%} of positions {_indices(layer_stats.rare)}, of "
                   f"{len(layer_stats.active)}")
    click.echo(filter_spectrum(net).summary())
    save_figure(plot_statistics(found), Path(out) / "statistics.png")
    click.echo(f"wrote {Path(out) / 'statistics.png'}")


def _indices(channels, shown=12):
    listed = ", ".join(str(c) for c in channels[:shown])
    return f"[{listed}{', ...' if len(channels) > shown else ''}]"
