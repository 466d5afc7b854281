"""`kvis evolution`: the feature-evolution grid a FeatureEvolution callback saved."""

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@click.argument("log_dir", type=click.Path(exists=True, file_okay=False))
@common.figure_option
@click.option("--patches", is_flag=True, help="Show the image patches instead of the "
                                              "projections.")
def evolution(log_dir, out, patches):
    """Draw the feature-evolution grid a kvis.FeatureEvolution callback saved in LOG_DIR
    (Zeiler & Fergus, Fig. 4): a row per feature map, a column per recorded epoch.

    \b
    kvis evolution logs/demo --out evolution.png
    """
    from kvis.core.io import save_figure
    from kvis.training.evolution import load_evolution, plot_evolution

    result = load_evolution(log_dir)
    save_figure(plot_evolution(result, patches=patches), out)
    click.echo(f"{len(result.epochs)} epochs ({', '.join(str(e) for e in result.epochs)}) of "
               f"{sum(len(c) for c in result.channels.values())} feature maps; wrote {out}")
