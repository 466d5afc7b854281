"""`kvis invariance`: how features react to moving an image (Zeiler & Fergus, Fig. 5)."""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import TRANSFORMS


@main.command()
@common.model_options
@click.argument("images", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--transform", "-t", type=click.Choice(TRANSFORMS),
              default="translate", show_default=True,
              help="Vertical translation (pixels), scaling (factor) or rotation (degrees).")
@common.layers_option("Comma-separated layers to compare (default: the first stage and the "
                      "penultimate layer).")
@common.class_option("True class of the images, index or name, one for all or one per image "
                     "(default: each image's top prediction).")
@common.score_option("probability")  # what the paper plots (Fig. 5, 7)
@common.figure_option
@common.save_maps_option
def invariance(model, weights, labels, preprocess, images, transform, layers, classes, score,
               out, save_maps):
    """How MODEL's features react to moving IMAGES (Zeiler & Fergus, Fig. 5).

    For each transformed copy: the Euclidean distance between its feature vector and the
    original's at an early and a late layer, and the score of the true class; one curve per
    image.

    \b
    kvis invariance demo boot.png bag.png --transform rotate --out rotate.png
    kvis invariance vgg16 a.jpg b.jpg c.jpg --transform scale --out scale.png
    """
    from kvis.analyses.invariance import invariance as curves_of
    from kvis.analyses.invariance import plot_invariance
    from kvis.core.images import load_image
    from kvis.core.io import save_figure

    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    wanted = None if classes is None else common.class_list(classes)
    result = curves_of(net, [load_image(image, net) for image in images], transform=transform,
                       layers=layers, score=score,
                       classes=wanted[0] if wanted and len(wanted) == 1 else wanted)
    save_figure(plot_invariance(result), out)
    click.echo(f"{transform} values: " + " ".join(f"{v:g}" for v in result.values))
    for name, label, row in zip(result.names, result.class_labels, result.scores):
        click.echo(f"{name}: {score} of {label} from {row.min():.4f} to {row.max():.4f}")
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)
