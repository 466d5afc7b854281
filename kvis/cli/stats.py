"""`kvis stats`: dead and rarely active channels over a dataset, and the first layer's filter
spectrum (Zeiler & Fergus, section 4.1)."""

from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@common.scan_options
def stats(model, weights, labels, preprocess, data, layers, keep, batch_size, out, resume):
    """Activity statistics of MODEL's channels over DATA: dead and rarely active channels, and
    the frequency content of the first layer's filters (Zeiler & Fergus, section 4.1).

    \b
    kvis stats demo demo --out scan/
    """
    from kvis.core.io import save_figure
    from kvis.dataset.scan import RARE
    from kvis.dataset.statistics import filter_spectrum, plot_statistics

    net, found = common.run_scan(model, weights, labels, preprocess, data=data, layers=layers,
                                 keep=keep, batch_size=batch_size, out=out, resume=resume)
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
