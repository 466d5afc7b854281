"""Commands for the Zeiler & Fergus analyses: occlusion, invariance, correspondence."""


import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--size", default=32, show_default=True, type=int,
              help="Side of the gray occluder square, in pixels.")
@click.option("--stride", default=8, show_default=True, type=int,
              help="Pixels between occluder positions.")
@click.option("--layer", "-l", help="Layer whose strongest feature map is recorded "
                                    "(default: the last conv layer).")
@click.option("--class", "classes", help="Class whose probability is mapped (default: the top "
                                          "prediction).")
@click.option("--fill", type=float, help="Occluder gray level 0-255 (default: the dataset's "
                                         "mean pixel).")
@click.option("--memory", "memory_mb", default=1024, show_default=True, type=click.IntRange(1),
              help="Memory budget in MB for one batch of occluded images.")
@common.figure_option
def occlusion(model, weights, labels, image, size, stride, layer, classes, fill, memory_mb, out,
              preprocess):
    """Slide a gray square over IMAGE and map what MODEL says (Zeiler & Fergus, Fig. 7).

    For each position: the total activation of the layer's strongest feature map, the
    probability of the class, and the most probable label.

    \b
    kvis occlusion demo boot.png --size 6 --stride 2 --out occlusion.png
    kvis occlusion vgg16 dog.jpg --size 32 --stride 14 --class 215 --out occlusion.png
    """
    from kvis.analyses.occlusion import occlusion as occlude
    from kvis.analyses.occlusion import plot_occlusion
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.models import class_names

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    picture = load_image(image, net, preprocessing=preprocess)
    result = occlude(net, picture.x, size=size, stride=stride, fill=fill, layer=layer,
                     classes=None if classes is None else common.class_list(classes)[0],
                     memory_mb=memory_mb, preprocessing=preprocess)
    names = class_names(net)
    save_figure(plot_occlusion(result, picture.pixels, class_names=names,
                               title=f"{picture.name}: occlusion sensitivity"), out)
    feature, probability, label = result.unoccluded
    click.echo(f"unoccluded: {result.layer} #{result.channel} total {feature:.4g}, "
               f"p(class #{result.class_index}) {probability:.4f}; lowest with the occluder: "
               f"{result.probability.min():.4f}")
    click.echo(f"wrote {out}")


@main.command()
@common.model_options
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--transform", "-t", type=click.Choice(["translate", "scale", "rotate"]),
              default="translate", show_default=True,
              help="Vertical translation (pixels), scaling (factor) or rotation (degrees).")
@click.option("--layers", "-l", help="Comma-separated layers to compare (default: the first "
                                     "stage and the penultimate layer).")
@click.option("--class", "classes", help="True class of the images, index or name (default: "
                                          "each image's top prediction).")
@common.figure_option
def invariance(model, weights, labels, images, transform, layers, classes, out, preprocess):
    """How MODEL's features react to moving IMAGES (Zeiler & Fergus, Fig. 5).

    For each transformed copy: the Euclidean distance between its feature vector and the
    original's at an early and a late layer, and the probability of the true class; one
    curve per image.

    \b
    kvis invariance demo boot.png bag.png --transform rotate --out rotate.png
    kvis invariance vgg16 a.jpg b.jpg c.jpg --transform scale --out scale.png
    """
    from kvis.analyses.invariance import invariance as curves_of
    from kvis.analyses.invariance import plot_invariance
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.models import class_names

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    pictures = [load_image(image, net, preprocessing=preprocess) for image in images]
    result = curves_of(net, pictures, transform=transform, preprocessing=preprocess,
                       layers=None if layers is None else [n.strip() for n in layers.split(",")],
                       classes=None if classes is None else common.class_list(classes)[0])
    save_figure(plot_invariance(result, class_names=class_names(net)), out)
    click.echo(f"{transform} values: " + " ".join(f"{v:g}" for v in result.values))
    click.echo(f"wrote {out}")


@main.command()
@common.model_options
@click.option("--images", "folder", required=True, type=click.Path(file_okay=False),
              help="Folder of images of one kind (e.g. dog faces).")
@click.option("--boxes", required=True, type=click.Path(dir_okay=False),
              help='JSON file: {"image file name": [x, y, width, height], ...}, the same part '
                   "(e.g. the left eye) in each image, in its own pixels.")
@click.option("--layers", "-l", help="Comma-separated layers (default: the last conv layer "
                                     "and the penultimate layer).")
@click.option("--trials", default=5, show_default=True, type=click.IntRange(1),
              help="Random-box draws for the comparison.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random boxes.")
@common.figure_option
def correspondence(model, weights, labels, folder, boxes, layers, trials, seed, out, preprocess):
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
    pictures = [load_image(path, net, preprocessing=preprocess) for path in paths]
    scaled = [scale_box(box, read_image(path, channels=net.input_shape[-1]).shape[:2],
                        picture.pixels.shape[:2])
              for path, box, picture in zip(paths, part_boxes, pictures)]
    result = analyse(net, pictures, scaled, trials=trials, seed=seed, preprocessing=preprocess,
                     layers=None if layers is None else [n.strip() for n in layers.split(",")])
    save_figure(plot_correspondence(result), out)
    click.echo(correspondence_table(result))
    click.echo(f"wrote {out}")
