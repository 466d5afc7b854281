"""`kvis maximize`: the images that most excite channels of a layer, or classes."""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import PARAMETERIZATIONS


@main.command()
@common.model_options
@common.layer_option("Layer whose channels (filters) to maximize.")
@common.channels_option("Channels of --layer to maximize.", default="0-15")
@common.class_option("Maximize classes instead: indices, ranges or names, e.g. 281,285 or tabby.")
@common.figure_option
@click.option("--steps", default=256, show_default=True, type=click.IntRange(1),
              help="Gradient steps.")
@click.option("--size", type=click.IntRange(8),
              help="Image size in pixels (default: the model's input size).")
@click.option("--param", "parameterization", type=click.Choice(PARAMETERIZATIONS),
              default="fft", show_default=True,
              help="Optimize Fourier coefficients in decorrelated colour, or raw pixels.")
@click.option("--lr", "learning_rate", default=0.05, show_default=True,
              type=click.FloatRange(0, min_open=True), help="Adam learning rate, above 0.")
@common.seed_option("Seed of the starting noise.")
@common.save_maps_option
def maximize(model, weights, labels, layer, channels, classes, out, steps, size,
             parameterization, learning_rate, seed, preprocess, save_maps):
    """Synthesize the images that most excite channels of a LAYER, or classes, of MODEL.

    Gradient ascent from noise, with jitter, scaling and rotation each step and a
    Fourier-space image (Olah et al. 2017); all units are optimized as one batch.

    \b
    kvis maximize demo --layer block2_conv2 --channels 0-15 --out grid.png
    kvis maximize vgg16 --layer block4_conv1 --channels 0-63 --steps 512 --out grid.png
    kvis maximize vgg16 --class tabby,281 --out cats.png
    """
    from kvis.core.io import save_figure
    from kvis.synthesis.maximize import maximize_classes, maximize_filters, plot_synthesis
    from kvis.synthesis.render import default_settings

    if (layer is None) == (classes is None):
        raise click.UsageError("give --layer (with --channels) or --class")
    chosen = common.class_list(classes) if classes is not None else None
    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    image_size = None if size is None else (size, size)
    settings = default_settings(net, image_size, steps=steps, learning_rate=learning_rate,
                                parameterization=parameterization)
    options = dict(seed=seed, settings=settings, size=image_size)
    if classes is None:
        result = maximize_filters(net, layer, channels, **options)
    else:
        result = maximize_classes(net, chosen, **options)
        for unit, score in zip(result.units, result.scores):
            click.echo(f"{unit}: logit {score:.4g}")
    save_figure(plot_synthesis(result, title=f"{net.name}: {result.title}"), out)
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)
