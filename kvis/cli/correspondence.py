"""`kvis correspondence`: does a model relate the same part across images? (Zeiler & Fergus,
Table 1)"""

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@click.option("--images", "folder", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images of one kind (e.g. dog faces).")
@click.option("--boxes", required=True, type=click.Path(exists=True, dir_okay=False),
              help='JSON file: {"image file name": [x, y, width, height], ...}, the same part '
                   "(e.g. the left eye) in each image, in its own pixels.")
@common.layers_option("Comma-separated layers (default: the last conv layer and the "
                      "penultimate layer).")
@click.option("--trials", default=5, show_default=True, type=click.IntRange(1),
              help="Random-box draws for the comparison.")
@common.seed_option("Seed of the random boxes.")
@common.figure_option
@common.save_maps_option
def correspondence(model, weights, labels, preprocess, folder, boxes, layers, trials, seed,
                   out, save_maps):
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
    from kvis.core.images import load_image, read_image
    from kvis.core.io import save_figure

    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    paths, part_boxes = load_boxes(boxes, folder)
    pictures = [load_image(path, net) for path in paths]
    scaled = [scale_box(box, read_image(path, channels=net.input_shape[-1]).shape[:2],
                        picture.pixels.shape[:2])
              for path, box, picture in zip(paths, part_boxes, pictures)]
    result = analyse(net, pictures, scaled, trials=trials, seed=seed, layers=layers)
    save_figure(plot_correspondence(result), out)
    click.echo(correspondence_table(result))
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)
