"""`kvis sanity`: do attention maps depend on the model? (Adebayo et al. 2018)"""

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import ATTENTION_METHODS


@main.command()
@common.model_options
@common.image_argument
@click.option("--methods", type=common.MethodList(),
              default="saliency,guided-backprop,grad-cam,integrated-gradients",
              show_default=True, metavar="METHOD[,METHOD...]",
              help=f"Comma-separated attention methods to check: {', '.join(ATTENTION_METHODS)}.")
@common.score_option()
@click.option("--class", "classes", help="Class to explain (default: the top prediction).")
@common.layers_option("Randomize down to these layers only (default: every weighted "
                      "layer), comma-separated.")
@common.figure_option
@common.save_maps_option
def sanity(model, weights, labels, preprocess, image, methods, score, classes, layers, out,
           save_maps):
    """Check that attention maps depend on the model (Adebayo et al. 2018).

    The weighted layers of a copy of MODEL are re-initialized from the top down, one after
    another, and each method's map is compared with its original (rank correlation). A
    faithful method's correlation falls.
    """
    from kvis.attribution.sanity import cascading_randomization, plot_sanity_check
    from kvis.core.images import load_image
    from kvis.core.io import save_figure

    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    picture = load_image(image, net)
    result = cascading_randomization(
        net, picture, methods, classes=None if classes is None else common.class_list(classes)[0],
        score=score, layers=layers)
    save_figure(plot_sanity_check(
        result, title=f"{picture.name}: cascading randomization, {result.class_labels[0]} "
                      f"({result.score})"), out)
    click.echo(f"rank correlation with the original map after randomizing down to each layer "
               f"({result.class_labels[0]}, {result.score}):")
    click.echo(_correlation_table(result))
    click.echo(f"wrote {out}")
    common.save_maps(maps_file, result)


def _correlation_table(result):
    """A row per randomization step, named by its layer; a column per method."""
    width = max(len("randomized down to"), *(len(layer) for layer in result.layers))
    columns = [max(len(method), 5) for method in result.methods]
    lines = ["  " + "randomized down to".ljust(width) + "".join(
        f"  {method:>{column}}" for method, column in zip(result.methods, columns))]
    for step, layer in enumerate(result.layers):
        lines.append(f"  {layer:<{width}}" + "".join(
            f"  {value:>{column}.2f}"
            for value, column in zip(result.correlations[:, step], columns)))
    return "\n".join(lines)
