"""`kvis occlusion`: slide a square over an image and map what the model says (Zeiler & Fergus,
Fig. 7)."""

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@common.image_argument
@click.option("--size", default=32, show_default=True, type=click.IntRange(1),
              help="Side of the occluder square, in pixels.")
@click.option("--stride", default=8, show_default=True, type=click.IntRange(1),
              help="Pixels between occluder positions.")
@common.layer_option("Layer whose strongest feature map is recorded (default: the last conv "
                     "layer).")
@common.class_option("Class whose score is mapped, index or name (default: the top prediction).")
@common.score_option("probability")  # what the paper plots (Fig. 5, 7)
@click.option("--fill", type=click.FloatRange(0, 255),
              help="Occluder gray level in pixels, 0-255 (default: the dataset's mean pixel).")
@click.option("--memory-mb", default=1024, show_default=True, type=click.IntRange(1),
              help="Memory budget in MiB for one batch of occluded images.")
@click.option("--incremental/--full", default=None,
              help="Recompute only the window of each layer the occluder changes (Krypton), or "
                   "every position in full (default: incremental where that is less work).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Approximate: no window side grows past this fraction of its map's side "
                   "(default: exact).")
@click.option("--drill-down", type=click.FloatRange(0, 1, min_open=True),
              help="Approximate: every other position first, then this fraction of the others, "
                   "where the score changes most (default: every position).")
@click.option("--check", is_flag=True,
              help="Also compute the exact map and print the approximation's error.")
@common.figure_option
@common.save_maps_option
def occlusion(model, weights, labels, preprocess, image, size, stride, layer, classes, score, fill,
              memory_mb, incremental, threshold, drill_down, check, out, save_maps):
    """Slide a square over IMAGE and map what MODEL says (Zeiler & Fergus, Fig. 7).

    For each position: the total activation of the layer's strongest feature map, the
    class's score and the most likely label; and per pixel, the mean score drop over the
    positions that cover it (Captum's occlusion map).

    \b
    kvis occlusion demo boot.png --size 6 --stride 2 --out occlusion.png
    kvis occlusion vgg16 dog.jpg --size 32 --stride 14 --class 215 --out occlusion.png
    kvis occlusion vgg16 dog.jpg --size 16 --threshold 0.4 --check --out occlusion.png
    """
    from kvis.attribution.occlusion import occlusion as occlude
    from kvis.attribution.occlusion import plot_occlusion
    from kvis.core.images import load_image
    from kvis.core.io import save_figure

    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    result = occlude(net, load_image(image, net), size=size, stride=stride, fill=fill,
                     layer=layer, classes=classes, score=score, memory_mb=memory_mb,
                     incremental="auto" if incremental is None else incremental,
                     threshold=threshold, drill_down=drill_down, check=check)
    save_figure(plot_occlusion(result), out)
    feature, value, _ = result.unoccluded
    name = "p" if score == "probability" else "logit"
    click.echo(f"unoccluded: {result.layer} #{result.channel} total {feature:.4g}, "
               f"{name}({result.class_label}) {value:.4f}; lowest with the occluder: "
               f"{result.scores.min():.4f}")
    click.echo(f"inference: {result.inference}" + (
        f", full maps from {result.fallback}" if result.fallback else ""))
    if result.error is not None:
        click.echo(f"error against the exact map: max {result.error[0]:.3g}, mean "
                   f"{result.error[1]:.3g} of its range")
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)
