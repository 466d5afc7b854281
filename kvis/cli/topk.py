"""`kvis topk`: the strongest activations of every feature map over a dataset (Zeiler & Fergus,
Fig. 2)."""

import click

from kvis.cli import common, scan_folder
from kvis.cli.common import main


@main.command()
@common.model_options
@scan_folder.scan_options
@common.count_option("Channels per layer figure, the most strongly activated first.",
                     default=16)
@click.option("--statistics/--no-statistics", default=True, show_default=True,
              help="Also gather each channel's statistics into the index (what kvis stats "
                   "shows); --no-statistics scans faster where the model is small.")
def topk(model, weights, labels, preprocess, data, layers, keep, strongest, batch_size, out,
         resume, overwrite, count, statistics):
    """The strongest activations of every feature map of MODEL over DATA (Zeiler & Fergus,
    Fig. 2): one streaming pass, then each activation's deconvnet projection beside its
    image patch.

    DATA is a folder of images (recursive; one subfolder per class gives labels), an
    MNIST/Fashion-MNIST IDX images file, or demo. OUT receives index.json (every channel's
    --keep strongest images, or positions with --strongest positions, and its statistics
    unless --no-statistics),
    checkpoint.npz (for --resume) and one figure per layer. A scan already in OUT is
    continued with --resume or replaced with --overwrite.

    \b
    kvis topk demo demo --out scan/
    kvis topk vgg16 photos/ --layers block3_conv3,block5_conv3 --out scan/ --resume
    """
    from kvis.core.io import save_figure
    from kvis.dataset.examples import plot_top_examples, top_examples

    net, found = scan_folder.run_scan(model, weights, labels, preprocess, data=data, layers=layers,
                                      keep=keep, strongest=strongest, batch_size=batch_size,
                                      out=out, resume=resume, overwrite=overwrite,
                                      statistics=statistics)
    for layer in found.layers:
        figure = plot_top_examples(top_examples(net, found, data, layer=layer, count=count,
                                                batch_size=batch_size))
        target = scan_folder.topk_figure(out, keep, layer)
        save_figure(figure, target)
        click.echo(f"wrote {target}")
