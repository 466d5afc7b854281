"""`kvis microscope`: a website of every unit of a model, opened from disk."""

import logging
import re

import click

from kvis.cli import common
from kvis.cli.common import DataSpec, main


class UnitSpec(click.ParamType):
    """--maximize: 'all' -> None (every unit), 'none' -> {}, 'LAYER:INDICES,...' ->
    {layer: [channels]} (e.g. 'block3_pool:0-15,block2_pool:3')."""

    name = "units"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, dict):
            return value
        text = str(value).strip()
        if text in ("all", "none"):
            return None if text == "all" else {}
        chosen = {}
        for part in re.split(r",(?=[^,]*:)", text):  # a comma before the next LAYER:
            layer, colon, channels = part.rpartition(":")
            if not colon or not layer.strip():
                self.fail(f"{value!r}: write all, none, or LAYER:INDICES like "
                          "block3_pool:0-15,block2_pool:3", param, ctx)
            try:
                chosen.setdefault(layer.strip(), []).extend(common.indices(channels))
            except ValueError as error:
                self.fail(str(error), param, ctx)
        return chosen


@main.command()
@common.model_options
@click.argument("data", type=DataSpec())
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder of the site; open OUT/index.html in a browser.")
@common.layers_option("Comma-separated spatial layers to show (default: the last layer of "
                      "each resolution).")
@click.option("--concepts", type=click.Path(exists=True, file_okay=False),
              help="A concept dataset (as for kvis dissect): each unit's best concepts by IoU.")
@click.option("--maximize", default="all", show_default=True, type=UnitSpec(),
              metavar="UNITS",
              help="Units whose activation-maximization images to make: all, none, or "
                   "LAYER:INDICES,... e.g. block3_pool:0-15,block2_pool:3.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1),
              help="Maximization images per unit, each from other starting noise.")
@click.option("--steps", type=click.IntRange(1),
              help="Gradient steps per maximization image (default: 256).")
@click.option("--resume", is_flag=True, help="Finish the site in OUT (same model and data).")
@click.option("--overwrite", is_flag=True, help="Replace the site in OUT.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Images per forward pass, and units optimized together.")
@click.option("--survey", type=click.Path(exists=True, dir_okay=False),
              help="A survey file of MODEL over DATA (kvis.microscope.beam.survey_on_beam, "
                   "on a cluster) used instead of surveying DATA here.")
def microscope(model, weights, labels, preprocess, data, out, layers, concepts, maximize,
               seeds, steps, resume, overwrite, batch_size, survey):
    """Write a website of every unit of MODEL over DATA, opened from disk in any browser.

    A page per unit: the images that excite it most (activation maximization from several
    seeds), its top-9 dataset examples with their deconvnet projections, the histogram and
    statistics of its activation, the classes and concepts it responds to, and the units that
    feed it and that it feeds. Layer pages sort and filter their units, class pages list the
    units a class relies on, and a search box finds a unit (layer:unit), a concept or a class.

    DATA is a folder of images (one subfolder per class gives labels and class pages), an
    MNIST/Fashion-MNIST IDX images file, or demo. One pass over DATA serves every page; the
    dataset-driven pages come first, then activation maximization (the slow part: its cost is
    estimated and printed first) fills in each unit's images. An interrupted build is
    finished with --resume. --survey takes that pass from a file made elsewhere (a Beam
    pipeline over a dataset too large for one machine).

    \b
    kvis microscope demo demo --out site/
    kvis microscope vgg16 photos/ --layers block4_conv3,block5_conv3 \\
        --maximize block5_conv3:0-63 --out site/
    kvis microscope model.keras photos/ --concepts concepts/ --out site/ --resume
    kvis microscope model.keras photos/ --survey survey.npz --out site/
    """
    from kvis.microscope.build import build_microscope

    if resume and overwrite:
        raise click.UsageError("--resume finishes the site in OUT and --overwrite replaces "
                               "it: pass one of them")
    net = common.load_network(model, weights, labels, preprocess)
    log = logging.getLogger("kvis.microscope")
    echo, level = _Echo(), log.level
    log.addHandler(echo)
    log.setLevel(logging.INFO)
    try:
        index = build_microscope(net, data, out, layers=layers, concepts=concepts,
                                 maximize=maximize, seeds=seeds, steps=steps, resume=resume,
                                 overwrite=overwrite, batch_size=batch_size, survey=survey)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; what was written is kept: run the same command with "
                   "--resume to finish the site", err=True)
        raise SystemExit(130) from None
    finally:
        log.removeHandler(echo)
        log.setLevel(level)
    click.echo(f"wrote {index}")


class _Echo(logging.Handler):
    """The build's progress lines, on stderr."""

    def emit(self, record):
        click.echo(record.getMessage(), err=True)
