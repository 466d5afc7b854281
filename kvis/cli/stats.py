"""`kvis stats`: dead and rarely active channels over a dataset, and the first layer's filter
spectrum (Zeiler & Fergus, section 4.1)."""

from pathlib import Path

import click

from kvis.cli import common, scan_folder
from kvis.cli.common import main


@main.command()
@common.model_options
@scan_folder.scan_options
def stats(model, weights, labels, preprocess, data, layers, keep, strongest, batch_size, out,
          resume, overwrite):
    """Activity statistics of MODEL's channels over DATA: dead and rarely active channels, and
    the frequency content of the first layer's filters (Zeiler & Fergus, section 4.1).

    \b
    kvis stats demo demo --out scan/
    """
    from kvis.core.io import save_figure
    from kvis.dataset.scan import RARE
    from kvis.dataset.statistics import filter_spectrum, plot_statistics

    net, found = scan_folder.run_scan(model, weights, labels, preprocess, data=data, layers=layers,
                                      keep=keep, strongest=strongest, batch_size=batch_size,
                                      out=out, resume=resume, overwrite=overwrite)
    for layer in found.layers:
        layer_stats = found.stats[layer]
        rare = f"active at under {RARE:.0%} of positions"
        click.echo(f"{layer} ({len(layer_stats.active)} channels): "
                   f"{_listed(layer_stats.dead, 'dead', 'no dead channels')}; "
                   f"{_listed(layer_stats.rare, rare, f'none {rare}')}")
    click.echo(filter_spectrum(net).summary())
    save_figure(plot_statistics(found), Path(out) / "statistics.png")
    click.echo(f"wrote {Path(out) / 'statistics.png'}")


def _listed(channels, some, none, shown=12):
    """'no dead channels' (`none`), or '3 dead: 1, 2, 5' (`some`)."""
    if not len(channels):
        return none
    listed = ", ".join(str(c) for c in channels[:shown])
    return f"{len(channels)} {some}: {listed}{', ...' if len(channels) > shown else ''}"
