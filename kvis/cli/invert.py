"""`kvis invert`: an image reconstructed from its representation at chosen layers."""

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command()
@common.model_options
@common.image_argument
@common.layers_option("Comma-separated layer names, shallow to deep, e.g. "
                      "block1_conv2,block3_conv1.", required=True)
@common.figure_option
@click.option("--steps", default=400, show_default=True, type=click.IntRange(1),
              help="Gradient steps.")
@common.seed_option("Seed of the starting noise.")
@common.save_maps_option
def invert(model, weights, labels, image, layers, out, steps, seed, preprocess, save_maps):
    """Reconstruct IMAGE from its representation at each of the given layers of MODEL.

    Network inversion (Mahendran & Vedaldi 2015): an image is optimized until its
    representation matches the original's, with alpha-norm and total-variation priors.
    Each reconstruction is labelled with its normalized representation error and its pixel
    RMSE to the original.

    \b
    kvis invert demo boot.png --layers block1_conv1,block2_conv2,block3_conv1,fc1 --out inv.png
    """
    from kvis.core.images import load_image
    from kvis.core.io import save_figure
    from kvis.synthesis.invert import inversion_settings, plot_inversion
    from kvis.synthesis.invert import invert as invert_image

    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    result = invert_image(net, load_image(image, net), layers, seed=seed,
                          settings=inversion_settings(steps=steps))
    save_figure(plot_inversion(result, title=f"{result.names[0]} reconstructed from {net.name}"),
                out)
    for layer, error, pixels in zip(result.layers, result.errors, result.pixel_errors):
        click.echo(f"{layer}: representation error {error:.4g}, pixel RMSE {pixels:.4f}")
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)
