"""Commands that synthesize images: maximize, invert."""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.vocabulary import PARAMETERIZATIONS


@main.command()
@common.model_options
@click.option("--layer", "-l", help="Layer whose filters to maximize.")
@click.option("--filters", help="Filter indices and ranges, e.g. 0-15 (default: 0-15).")
@click.option("--class", "classes",
              help="Maximize classes instead: indices, ranges or names, e.g. 281,285 or tabby.")
@common.figure_option
@click.option("--steps", default=256, show_default=True, type=click.IntRange(1),
              help="Gradient steps.")
@click.option("--size", type=click.IntRange(8),
              help="Image size in pixels (default: the model's input size).")
@click.option("--param", "parameterization", type=click.Choice(PARAMETERIZATIONS),
              default="fft", show_default=True,
              help="Optimize Fourier coefficients in decorrelated colour, or raw pixels.")
@click.option("--lr", "learning_rate", default=0.05, show_default=True, type=float,
              help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Seed of the starting noise.")
@click.option("--xla", is_flag=True, help="Compile with XLA (jit_compile); fastest on a GPU.")
def maximize(model, weights, labels, layer, filters, classes, out, steps, size, parameterization,
             learning_rate, seed, xla, preprocess):
    """Synthesize the images that most excite filters of a LAYER, or classes, of MODEL.

    Gradient ascent from noise, with jitter, scaling and rotation each step and a
    Fourier-space image (Olah et al. 2017); all units are optimized as one batch.

    \b
    kvis maximize demo --layer block2_conv2 --filters 0-15 --out grid.png
    kvis maximize vgg16 --layer block4_conv1 --filters 0-63 --steps 512 --out grid.png
    kvis maximize vgg16 --class tabby,281 --out cats.png
    """
    from kvis.engine import default_settings
    from kvis.io import save_figure
    from kvis.maximization import maximize_classes, maximize_filters, plot_synthesis

    if (layer is None) == (classes is None):
        raise click.UsageError("give --layer (with --filters) or --class")
    units = (common.class_list(classes) if classes is not None
             else common.index_list(filters or "0-15", "--filters"))
    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    image_size = None if size is None else (size, size)
    settings = default_settings(net, image_size, steps=steps, learning_rate=learning_rate,
                                parameterization=parameterization, jit_compile=xla)
    options = dict(seed=seed, settings=settings, size=image_size)
    if classes is None:
        result = maximize_filters(net, layer, units, **options)
    else:
        result = maximize_classes(net, units, **options)
        for unit, score in zip(result.units, result.scores):
            click.echo(f"{unit}: logit {score:.4g}")
    save_figure(plot_synthesis(result, title=f"{net.name}: {result.title}"), out)
    click.echo(f"wrote {out}")


@main.command()
@common.model_options
@common.image_argument
@click.option("--layers", "-l", required=True,
              help="Comma-separated layer names, shallow to deep, e.g. block1_conv2,block3_conv1.")
@common.figure_option
@click.option("--steps", default=400, show_default=True, type=click.IntRange(1),
              help="Gradient steps.")
@click.option("--seed", default=0, show_default=True, help="Seed of the starting noise.")
def invert(model, weights, labels, image, layers, out, steps, seed, preprocess):
    """Reconstruct IMAGE from its representation at each of the given layers of MODEL.

    Network inversion (Mahendran & Vedaldi 2015): an image is optimized until its
    representation matches the original's, with alpha-norm and total-variation priors.
    Each reconstruction is labelled with its normalized representation error and its pixel
    RMSE to the original.

    \b
    kvis invert demo boot.png --layers block1_conv1,block2_conv2,block3_conv1,fc1 --out inv.png
    """
    from kvis.images import load_image
    from kvis.inversion import inversion_settings, plot_inversion
    from kvis.inversion import invert as invert_image
    from kvis.io import save_figure

    out = common.figure_path(out)
    net = common.load_network(model, weights, labels, preprocess)
    result = invert_image(net, load_image(image, net),
                          [name.strip() for name in layers.split(",")],
                          seed=seed, settings=inversion_settings(steps=steps))
    save_figure(plot_inversion(result, title=f"{result.name} reconstructed from {net.name}"),
                out)
    for layer, error, pixels in zip(result.layers, result.errors, result.pixel_errors):
        click.echo(f"{layer}: representation error {error:.4g}, pixel RMSE {pixels:.4f}")
    click.echo(f"wrote {out}")
