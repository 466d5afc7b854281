"""Commands for the Zeiler & Fergus analyses: occlusion, invariance, correspondence."""


import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.vocabulary import TRANSFORMS


def _layer_list(text):
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@main.command()
@common.model_options
@common.image_argument
@click.option("--size", default=32, show_default=True, type=click.IntRange(1),
              help="Side of the occluder square, in pixels.")
@click.option("--stride", default=8, show_default=True, type=click.IntRange(1),
              help="Pixels between occluder positions.")
@click.option("--layer", "-l", help="Layer whose strongest feature map is recorded "
                                    "(default: the last conv layer).")
@click.option("--class", "cls", help="Class whose score is mapped, index or name (default: "
                                      "the top prediction).")
@common.score_option("probability")  # what the paper plots (Fig. 5, 7)
@click.option("--fill", type=click.FloatRange(0, 255),
              help="Occluder gray level in pixels, 0-255 (default: the dataset's mean pixel).")
@click.option("--memory", "memory_mb", default=1024, show_default=True, type=click.IntRange(1),
              help="Memory budget in MB for one batch of occluded images.")
@common.figure_option
def occlusion(model, weights, labels, preprocess, image, size, stride, layer, cls, score, fill,
              memory_mb, out):
    """Slide a square over IMAGE and map what MODEL says (Zeiler & Fergus, Fig. 7).

    For each position: the total activation of the layer's strongest feature map, the
    class's score and the most likely label; and per pixel, the mean score drop over the
    positions that cover it (Captum's occlusion map).

    \b
    kvis occlusion demo boot.png --size 6 --stride 2 --out occlusion.png
    kvis occlusion vgg16 dog.jpg --size 32 --stride 14 --class 215 --out occlusion.png
    """
    from kvis.analyses.occlusion import occlusion as occlude
    from kvis.analyses.occlusion import plot_occlusion
    from kvis.images import load_image
    from kvis.io import save_figure

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    result = occlude(net, load_image(image, net), size=size, stride=stride, fill=fill,
                     layer=layer, classes=cls, score=score, memory_mb=memory_mb)
    save_figure(plot_occlusion(result), out)
    feature, value, _ = result.unoccluded
    name = "p" if score == "probability" else "logit"
    click.echo(f"unoccluded: {result.layer} #{result.channel} total {feature:.4g}, "
               f"{name}({result.class_label}) {value:.4f}; lowest with the occluder: "
               f"{result.scores.min():.4f}")
    click.echo(f"wrote {out}")


@main.command()
@common.model_options
@click.argument("images", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--transform", "-t", type=click.Choice(TRANSFORMS),
              default="translate", show_default=True,
              help="Vertical translation (pixels), scaling (factor) or rotation (degrees).")
@click.option("--layers", "-l", help="Comma-separated layers to compare (default: the first "
                                     "stage and the penultimate layer).")
@click.option("--class", "classes", help="True class of the images, index or name, one for all "
                                          "or one per image (default: each image's top "
                                          "prediction).")
@common.score_option("probability")  # what the paper plots (Fig. 5, 7)
@common.figure_option
def invariance(model, weights, labels, preprocess, images, transform, layers, classes, score,
               out):
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
    from kvis.images import load_image
    from kvis.io import save_figure

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    wanted = None if classes is None else common.class_list(classes)
    result = curves_of(net, [load_image(image, net) for image in images], transform=transform,
                       layers=_layer_list(layers), score=score,
                       classes=wanted[0] if wanted and len(wanted) == 1 else wanted)
    save_figure(plot_invariance(result), out)
    click.echo(f"{transform} values: " + " ".join(f"{v:g}" for v in result.values))
    for name, label, row in zip(result.names, result.class_labels, result.scores):
        click.echo(f"{name}: {score} of {label} from {row.min():.4f} to {row.max():.4f}")
    click.echo(f"wrote {out}")


@main.command()
@common.model_options
@click.option("--images", "folder", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images of one kind (e.g. dog faces).")
@click.option("--boxes", required=True, type=click.Path(exists=True, dir_okay=False),
              help='JSON file: {"image file name": [x, y, width, height], ...}, the same part '
                   "(e.g. the left eye) in each image, in its own pixels.")
@click.option("--layers", "-l", help="Comma-separated layers (default: the last conv layer "
                                     "and the penultimate layer).")
@click.option("--trials", default=5, show_default=True, type=click.IntRange(1),
              help="Random-box draws for the comparison.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random boxes.")
@common.figure_option
def correspondence(model, weights, labels, preprocess, folder, boxes, layers, trials, seed,
                   out):
    """Does MODEL relate the same part across images? (Zeiler & Fergus, Table 1)

    Occludes the given part in each image and measures how consistently the feature vectors
    change (Hamming distance between the signs of the changes, over image pairs), against
    occluding random boxes of the same size. Lower means more consistent.
    """
    from kvis.analyses.correspondence import correspondence as analyse
    from kvis.analyses.correspondence import (
        correspondence_table,
        load_boxes,
        plot_correspondence,
        scale_box,
    )
    from kvis.images import load_image, read_image
    from kvis.io import save_figure

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    paths, part_boxes = load_boxes(boxes, folder)
    pictures = [load_image(path, net) for path in paths]
    scaled = [scale_box(box, read_image(path, channels=net.input_shape[-1]).shape[:2],
                        picture.pixels.shape[:2])
              for path, box, picture in zip(paths, part_boxes, pictures)]
    result = analyse(net, pictures, scaled, trials=trials, seed=seed, layers=_layer_list(layers))
    save_figure(plot_correspondence(result), out)
    click.echo(correspondence_table(result))
    click.echo(f"wrote {out}")
