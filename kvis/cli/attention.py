"""`kvis attention`: which pixels drive a class score, overlaid on the image."""

import re
import warnings
from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import ATTENTION_METHODS, SIGNS


@main.command()
@common.model_options
@click.argument("image", type=click.Path(exists=True))
@click.option("--method", "-m", "methods", type=common.MethodList(), default="grad-cam",
              show_default=True, metavar="METHOD[,METHOD...]",
              help=f"Attention method, or several separated by commas (drawn side by side): "
                   f"{', '.join(ATTENTION_METHODS)}.")
@common.score_option()
@common.class_option("Class to explain, index or name (default: each image's top prediction); "
                     "with --batch, one for all images or one per image.")
@click.option("--target", type=common.TargetSpec(),
              help="Explain a channel (LAYER:CHANNEL, its mean) or a neuron "
                   "(LAYER:CHANNEL@ROW,COL) instead of a class.")
@common.layer_option("Conv layer for the CAM methods (default: the last one).")
@click.option("--batch", is_flag=True,
              help="IMAGE is a folder: explain every image in it, OUT is a folder.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file; a folder with --batch.")
@click.option("--sign", type=click.Choice(SIGNS),
              help="Show the signed attributions (Captum's signs): their absolute value, "
                   "positive or negative part, or all on a diverging colour map centred at 0 "
                   "(default: each method's own map).")
@common.count_option("score-cam only: weigh just the N channels of largest variance (Faster "
                     "Score-CAM, tf-keras-vis's max_N); default: every channel.", default=None)
@common.save_maps_option
def attention(model, weights, labels, preprocess, image, methods, score, classes, target, layer,
              batch, out, sign, count, save_maps):
    """Show which pixels drive MODEL's class score for IMAGE, overlaid on the image.

    With --batch, every image of the folder IMAGE gets a figure OUT/<image>_<class>_<method>.png
    titled with the image and class names; files that cannot be read are skipped, counted and
    listed. Several methods (-m grad-cam,saliency) are drawn side by side, a column each, and
    named in the file joined by _.

    \b
    kvis attention demo boot.png --method grad-cam --out cam.png
    kvis attention resnet50 cat.jpg --method score-cam --class tabby --out cam.png
    kvis attention vgg16 cat.jpg --method score-cam --count 64 --out cam.png
    kvis attention demo boot.png --method saliency --target block3_conv1:5 --out ch5.png
    kvis attention simpsons.keras photos/ --batch --method grad-cam++ --out cams/
    kvis attention demo boot.png -m grad-cam,saliency --sign all --save-maps m.npz --out m.png
    """
    from kvis.attribution.attention import attention as explain
    from kvis.attribution.attention import plot_attention, takes_layer
    from kvis.core.images import load_image
    from kvis.core.io import save_figure

    if count is not None and "score-cam" not in methods:
        raise click.BadParameter("--count is for --method score-cam", param_hint="--count")
    if not batch and Path(image).is_dir():
        raise click.BadParameter(f"{image} is a folder: pass --batch to explain every image "
                                 "in it", param_hint="IMAGE")
    sources = common.image_folder(image) if batch else [Path(image)]
    out = common.writable(Path(out) / "overlay.png").parent if batch else common.figure_path(out)
    maps_file = common.maps_path(save_maps)
    net = common.load_network(model, weights, labels, preprocess)
    chosen = None if classes is None else common.class_list(classes)
    images, kept = _readable(sources, net) if batch else ([load_image(sources[0], net)], [0])
    if chosen and len(chosen) == len(sources):  # one class per image: those of the kept ones
        chosen = [chosen[i] for i in kept]
    # --layer goes to the methods that take one (to all when none does, which refuses it).
    at_layer = [m for m in methods if takes_layer(m)] or methods
    channels = {} if count is None else {"count": count}
    results = [explain(net, images, method, layer=layer if method in at_layer else None,
                       classes=chosen[0] if chosen and len(chosen) == 1 else chosen,
                       score=score, target=common.target_objective(target),
                       **(channels if method == "score-cam" else {}))
               for method in methods]
    result = results[0]
    if batch:
        for i, name in enumerate(result.names):
            label = result.class_labels[i]
            target = out / f"{Path(name).stem}_{_file_part(label)}_{'_'.join(methods)}.png"
            save_figure(plot_attention([each[i] for each in results], sign=sign,
                                       title=f"{name}: {label} ({', '.join(methods)})",
                                       tile_inches=1.6), target)
            click.echo(f"{_line(result, i)} -> {target}")
    else:
        save_figure(plot_attention(results, sign=sign), out)
        for each in results:
            where = f" at {each.layer}" if each.layer else ""
            click.echo(f"{_line(each, 0)}: {each.method}{where}")
        click.echo(f"wrote {out}")
    common.save_maps(maps_file, result if len(results) == 1 else dict(zip(methods, results)),
                     shared=("classes", "class_labels", "scores", "score", "pixels", "names"))


def _readable(sources, net):
    """The --batch images that can be read and their positions in `sources`; the others are
    skipped, counted and listed in one warning, as a dataset scan does.

    Raises:
        KvisError: none can be read, or a model kvis cannot prepare images for.
    """
    from kvis.core.errors import KvisError
    from kvis.core.images import load_image
    from kvis.core.models import preprocessing_for
    from kvis.dataset.sources import skipped_note

    preprocessing_for(net)  # a model problem stops the batch; a file problem skips the file
    images, kept, skipped = [], [], []
    for i, source in enumerate(sources):
        try:
            images.append(load_image(source, net))
            kept.append(i)
        except KvisError as error:
            skipped.append((i, source.name, str(error)))
    if not images:
        raise KvisError(f"none of the {len(sources)} images can be read: {skipped[0][2]}")
    if skipped:
        warnings.warn(skipped_note(skipped, len(sources)), stacklevel=2)
    return images, kept


def _line(result, i):
    """'boot.png: ankle boot (logit 7.210)'."""
    from kvis.attribution.attention import scored_label

    return f"{result.names[i]}: {scored_label(result, i)}"


def _file_part(label):
    """A class label as part of a file name: 'ankle boot' -> 'ankle_boot', '#281' -> '281'."""
    return re.sub(r"[^\w.-]+", "_", label).strip("_") or "class"
