"""`kvis dissect`: network dissection over a concept dataset (Bau et al. 2017)."""

from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@click.argument("concepts", metavar="CONCEPTS_FOLDER",
                type=click.Path(exists=True, file_okay=False))
@common.layers_option("Comma-separated layers to dissect (default: the last conv layer).")
@click.option("--quantile", "-q", default=0.005, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Top fraction of each unit's activations that counts as firing.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Images per model call.")
@common.count_option("Units to print, best IoU first.", default=10, low=0)
@click.option("--cut", default=0.04, show_default=True, type=click.FloatRange(0, 1),
              help="IoU above which a unit counts as a detector of its concept.")
@common.figure_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write every unit's threshold, best concept and IoU as JSON.")
def dissect(model, weights, labels, preprocess, concepts, layers, quantile, batch_size, count,
            cut, out, json_path):
    """Match the units of MODEL to the concepts of CONCEPTS_FOLDER (network dissection).

    CONCEPTS_FOLDER holds concepts.txt (the name of concept i on line i), images/NAME.png|jpg
    and masks/NAME.png (a uint8 label map of the image's size: 0 = none, i = concept i).
    Each unit's map is cut at its top-quantile level, upsampled to the mask, and compared with
    every concept by IoU over the dataset.

    \b
    kvis dissect demo concepts/ --out dissection.png
    kvis dissect vgg16 broden/ --layers block4_conv3,block5_conv3 --json units.json -o d.png
    """
    from kvis.core.io import save_figure, write_atomically
    from kvis.dataset.dissection import dissect as run_dissection
    from kvis.dataset.dissection import plot_dissection

    json_path = json_path and common.writable(json_path)
    net = common.load_network(model, weights, labels, preprocess)
    result = run_dissection(net, concepts, layers, quantile=quantile, batch_size=batch_size)
    save_figure(plot_dissection(result, cut=cut), out)
    names = result.unit_names
    width = max(len(name) for name in names)
    order = sorted(range(len(names)), key=lambda u: -result.best_iou[u])[:count]
    for unit in order:
        click.echo(f"{names[unit]:<{width}}  {result.best_concepts[unit] or '-':<16} "
                   f"IoU {result.best_iou[unit]:.4f}")
    detectors = result.detectors(cut)
    click.echo(f"{sum(detectors.values())} of {len(names)} units detect a concept "
               f"(IoU > {cut:g}), {len(detectors)} concepts covered")
    if json_path:
        text = result.to_json(cut)
        write_atomically(json_path, lambda temporary: Path(temporary).write_text(text))
        click.echo(f"wrote {json_path}")
    click.echo(f"wrote {out}")
