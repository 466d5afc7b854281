"""The `kvis` command: thin wrappers that parse options, call one public function and save."""

import os
import re
import warnings
from pathlib import Path

import click

MODEL_HELP = "MODEL is vgg16, resnet50, demo, or a .keras/.h5 model file."
PREPROCESS_CHOICES = ("auto", "caffe", "tf", "torch", "unit", "none")


class _Command(click.Command):
    """A command that imports TensorFlow quietly before it runs (after its options are
    parsed, so --help stays instant)."""

    def invoke(self, ctx):
        _import_tensorflow_quietly()
        return super().invoke(ctx)


class _Group(click.Group):
    """Turns user mistakes into one line on stderr and warnings into 'warning:' lines."""

    command_class = _Command

    def invoke(self, ctx):
        from kvis.errors import KvisError

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _echo_warning
            try:
                return super().invoke(ctx)
            except KvisError as error:
                raise click.ClickException(str(error)) from None
            except OSError as error:
                raise click.ClickException(f"{error.strerror}: {error.filename}") from None


def _echo_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvis")
def main():
    """See what a convolutional network sees: layers, filters and feature maps.

    MODEL is vgg16, resnet50, demo (a small Fashion-MNIST CNN that ships with kvis), or the
    path of a .keras or .h5 model file, fine-tuned models with a nested base included.
    Layers inside a nested model are named by path: resnet50/conv5_block3_out.
    """


def _import_tensorflow_quietly():
    """Import TensorFlow with the process's stderr closed: its C++ start-up lines (oneDNN,
    CUDA probing) bypass every logging setting. Set TF_CPP_MIN_LOG_LEVEL to see them."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_figure_option = click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
                              help="Figure file (.png, .pdf, .svg, .jpg).")
_preprocess_option = click.option("--preprocess", type=click.Choice(PREPROCESS_CHOICES),
                                  default="auto", show_default=True,
                                  help="How pixels become model input.")


def _model_options(command):
    command = click.option("--weights", default="imagenet", show_default=True,
                           help="For vgg16/resnet50: imagenet (Keras cache), none, or a "
                                "weights file.")(command)
    return click.argument("model")(command)


def _load(model, weights):
    from kvis.models import load_model

    return load_model(model, weights=None if weights.lower() == "none" else weights)


def _figure_path(path):
    from kvis.io import FIGURE_SUFFIXES

    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{path}: a figure file ends in {', '.join(FIGURE_SUFFIXES)}",
                                 param_hint="--out")
    return Path(path)


@main.command()
@click.argument("model")
def layers(model):
    """List every layer of MODEL: type, output shape, parameters, receptive field.

    The receptive field of a spatial layer is the size of the input patch one unit sees, the
    stride between neighbouring units, and the centre of unit (0, 0), all in input pixels.
    Weights are not loaded: the inventory needs only the architecture.
    """
    from kvis.inventory import format_layer_table, layer_table

    click.echo(format_layer_table(layer_table(_load(model, "none"))))


@main.command()
@_model_options
@click.option("--layer", "-l", required=True, help="A conv layer's name or path.")
@_figure_option
@click.option("--mode", type=click.Choice(["auto", "grid", "channels", "summary"]),
              default="auto", show_default=True,
              help="grid: one tile per filter (1 or 3 input channels); channels: a tile per "
                   "input channel; summary: kernel norms and the strongest filters.")
@click.option("--max-filters", default=64, show_default=True, type=click.IntRange(1),
              help="Show at most this many filters.")
def filters(model, weights, layer, out, mode, max_filters):
    """Draw the filters (kernels) of a conv LAYER of MODEL.

    \b
    kvis filters vgg16 --layer block1_conv1 --out filters.png
    kvis filters demo --layer block2_conv1 --mode summary --out block2.png
    """
    from kvis.filters import conv_kernel, plot_filters
    from kvis.images import preprocessing_for_quietly
    from kvis.io import save_figure

    out = _figure_path(out)
    net = _load(model, weights)
    kernel = conv_kernel(net, layer)
    figure = plot_filters(kernel, mode=mode, max_filters=max_filters,
                          bgr=preprocessing_for_quietly(net).bgr,
                          title=f"{net.name} {layer} {kernel.shape}")
    save_figure(figure, out)
    click.echo(f"wrote {out}")


@main.command()
@_model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", "-l", "layer_names", multiple=True,
              help="A layer's name or path; repeat for several layers.")
@click.option("--all", "all_layers", is_flag=True, help="Every layer with spatial output.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file for one layer; a folder for several layers or --all.")
@click.option("--top", default=16, show_default=True, type=click.IntRange(1),
              help="Show the N strongest maps of each layer.")
@click.option("--channels", help="Show these channels instead, e.g. 3,17,40-47.")
@click.option("--rank-by", type=click.Choice(["mean", "max"]), default="mean",
              show_default=True, help="Score that ranks the maps.")
@click.option("--summary", is_flag=True, help="Summarise each layer instead of showing maps.")
@_preprocess_option
def features(model, weights, image, layer_names, all_layers, out, top, channels, rank_by,
             summary, preprocess):
    """Draw the feature maps IMAGE produces in MODEL, strongest first.

    With one --layer, OUT is a figure file. With several --layer options or --all, OUT is a
    folder that receives one figure per layer and overview.png, which shows every stage of
    the network (the last layer at each resolution).

    \b
    kvis features demo boot.png --layer block2_conv1 --out maps.png
    kvis features vgg16 cat.jpg --all --out cat_maps/
    """
    from tqdm.auto import tqdm

    from kvis.features import (
        feature_maps,
        plot_feature_maps,
        plot_feature_overview,
        plot_layer_summary,
        stage_layers,
    )
    from kvis.images import load_image
    from kvis.io import save_figure

    if all_layers == bool(layer_names):
        raise click.UsageError("give either --layer (one or more) or --all")
    net = _load(model, weights)
    picture = load_image(image, net, preprocessing=preprocess)
    maps = {path: m[0] for path, m in
            feature_maps(net, picture.x, None if all_layers else layer_names).items()}
    paths = list(maps)

    def draw(path):
        title = f"{picture.name} at {path}"
        if summary:
            return plot_layer_summary(maps[path], title=title)
        return plot_feature_maps(maps[path], top=top, channels=_index_list(channels, "--channels"),
                                 rank_by=rank_by, title=title)

    if len(paths) == 1:
        save_figure(draw(paths[0]), _figure_path(out))
        click.echo(f"wrote {out}")
        return
    folder = Path(out)
    for i, path in enumerate(tqdm(paths, desc="layers", unit="layer", disable=None)):
        save_figure(draw(path), folder / f"{i:03d}_{path.replace('/', '__')}.png")
    stages = [p for p in stage_layers(net) if p in maps] if all_layers else paths
    save_figure(plot_feature_overview({p: maps[p] for p in stages}), folder / "overview.png")
    click.echo(f"wrote {len(paths)} layer figures and overview.png to {folder}")


@main.command()
@_model_options
@click.option("--layer", "-l", help="Layer whose filters to maximize.")
@click.option("--filters", help="Filter indices and ranges, e.g. 0-15 (default: 0-15).")
@click.option("--class", "classes",
              help="Maximize classes instead: indices, ranges or names, e.g. 281,285 or tabby.")
@_figure_option
@click.option("--steps", default=256, show_default=True, type=click.IntRange(1),
              help="Gradient steps.")
@click.option("--size", type=click.IntRange(8),
              help="Image size in pixels (default: the model's input size).")
@click.option("--param", "parameterization", type=click.Choice(["fft", "pixel"]),
              default="fft", show_default=True,
              help="Optimize Fourier coefficients in decorrelated colour, or raw pixels.")
@click.option("--lr", "learning_rate", default=0.05, show_default=True, type=float,
              help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Seed of the starting noise.")
@click.option("--xla", is_flag=True, help="Compile with XLA (jit_compile); fastest on a GPU.")
@_preprocess_option
def maximize(model, weights, layer, filters, classes, out, steps, size, parameterization,
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
    out = _figure_path(out)
    net = _load(model, weights)
    image_size = None if size is None else (size, size)
    settings = default_settings(net, image_size, steps=steps, learning_rate=learning_rate,
                                parameterization=parameterization, jit_compile=xla)
    options = dict(seed=seed, settings=settings, size=image_size, preprocessing=preprocess)
    if classes is not None:
        result = maximize_classes(net, _class_list(classes), **options)
    else:
        result = maximize_filters(net, layer, _index_list(filters or "0-15", "--filters"),
                                  **options)
    save_figure(plot_synthesis(result, title=f"{net.name}: {result.title}"), out)
    click.echo(f"wrote {out}")


@main.command()
@_model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layers", "-l", required=True,
              help="Comma-separated layer names, shallow to deep, e.g. block1_conv2,block3_conv1.")
@_figure_option
@click.option("--steps", default=400, show_default=True, type=click.IntRange(1),
              help="Gradient steps.")
@click.option("--seed", default=0, show_default=True, help="Seed of the starting noise.")
@_preprocess_option
def invert(model, weights, image, layers, out, steps, seed, preprocess):
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

    out = _figure_path(out)
    net = _load(model, weights)
    picture = load_image(image, net, preprocessing=preprocess)
    result = invert_image(net, picture, [name.strip() for name in layers.split(",")],
                          seed=seed, settings=inversion_settings(steps=steps),
                          preprocessing=preprocess)
    save_figure(plot_inversion(result, title=f"{picture.name} reconstructed from {net.name}"),
                out)
    for layer, error, pixels in zip(result.layers, result.errors, result.pixel_errors):
        click.echo(f"{layer}: representation error {error:.4g}, pixel RMSE {pixels:.4f}")
    click.echo(f"wrote {out}")


@main.command()
@_model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", "-l", help="Spatial layer to project from.")
@click.option("--filter", "filters", help="Feature maps to project, e.g. 3,17 (default: --top).")
@click.option("--top", default=9, show_default=True, type=click.IntRange(1),
              help="Project the N strongest feature maps, each from its strongest activation.")
@click.option("--map", "whole_map", is_flag=True,
              help="Keep the whole feature map instead of its strongest activation.")
@click.option("--class", "classes", help="Project from class scores instead of a layer.")
@click.option("--guided", is_flag=True, help="Guided backpropagation (also gate by ReLU masks).")
@click.option("--method", type=click.Choice(["explicit", "gradient"]), default="explicit",
              show_default=True,
              help="explicit: unpooling, rectification, transposed filters; gradient: the "
                   "same as an input gradient, for any layer type.")
@_figure_option
@_preprocess_option
def deconv(model, weights, image, layer, filters, top, whole_map, classes, guided, method, out,
           preprocess):
    """Project activations of IMAGE in MODEL back to pixels (Zeiler & Fergus deconvnet).

    Each projection is shown beside the image patch its activation sees (its receptive
    field).

    \b
    kvis deconv demo boot.png --layer block2_conv2 --top 9 --out deconv.png
    kvis deconv vgg16 cat.jpg --layer block5_conv3 --filter 12,40 --guided --out g.png
    kvis deconv vgg16 cat.jpg --class tabby --out class.png
    """
    from kvis.images import load_image, preprocessing_for_quietly
    from kvis.io import save_figure
    from kvis.models import class_index
    from kvis.projection import deconvnet, plot_projections

    if (layer is None) == (classes is None):
        raise click.UsageError("give --layer or --class")
    out = _figure_path(out)
    net = _load(model, weights)
    picture = load_image(image, net, preprocessing=preprocess)
    result = deconvnet(net, picture.x, layer, channels=_index_list(filters, "--filter"), top=top,
                       whole_map=whole_map, guided=guided, method=method,
                       classes=None if classes is None else [
                           class_index(net, c) for c in _class_list(classes)])
    bgr = preprocessing_for_quietly(net, preprocess).bgr
    save_figure(plot_projections(result, picture.pixels, model=net, bgr=bgr,
                                 title=f"{picture.name}: {result.rule} from {result.layer}"), out)
    click.echo(f"wrote {out}")


@main.command()
@_model_options
@click.argument("image", type=click.Path())
@click.option("--method", "-m", type=click.Choice(["gradcam", "gradcam++", "scorecam",
                                                   "guided-gradcam", "saliency",
                                                   "guided-backprop", "smoothgrad", "ig"]),
              default="gradcam", show_default=True, help="Attention method.")
@click.option("--class", "classes",
              help="Class to explain, index or name (default: each image's top prediction).")
@click.option("--layer", "-l", help="Conv layer for the CAM methods (default: the last one).")
@click.option("--batch", is_flag=True,
              help="IMAGE is a folder: explain every image in it, OUT is a folder.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Figure file; a folder with --batch.")
@_preprocess_option
def attention(model, weights, image, method, classes, layer, batch, out, preprocess):
    """Show which pixels drive MODEL's class score for IMAGE, overlaid on the image.

    \b
    kvis attention demo boot.png --method gradcam --out cam.png
    kvis attention resnet50 cat.jpg --method scorecam --class tabby --out cam.png
    kvis attention simpsons.keras photos/ --batch --method gradcam++ --out cams/
    """
    import numpy as np

    from kvis.attention_maps import attention as explain
    from kvis.attention_maps import overlay, plot_attention
    from kvis.images import load_image
    from kvis.io import save_figure, write_image
    from kvis.models import class_names

    net = _load(model, weights)
    sources = _image_folder(image) if batch else [Path(image)]
    pictures = [load_image(source, net, preprocessing=preprocess) for source in sources]
    result = explain(net, np.concatenate([p.x for p in pictures]), method,
                     classes=None if classes is None else _class_list(classes)[0], layer=layer)
    names = class_names(net)
    if not batch:
        save_figure(plot_attention(pictures[0].pixels[None], result, class_names=names,
                                   title=f"{pictures[0].name}: {result.method}"),
                    _figure_path(out))
        click.echo(f"wrote {out}")
        return
    for picture, heatmap, cls in zip(pictures, result.maps, result.classes):
        target = Path(out) / f"{Path(picture.name).stem}_{method}.png"
        write_image(target, overlay(picture.pixels, heatmap))
        click.echo(f"{picture.name}: class #{cls}{' ' + names[cls] if names else ''} -> {target}")


@main.command()
@_model_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--methods", default="saliency,guided-backprop,gradcam,ig", show_default=True,
              help="Comma-separated attention methods to check.")
@click.option("--class", "classes", help="Class to explain (default: the top prediction).")
@click.option("--layers", help="Randomize down to these layers only (default: every "
                               "weighted layer), comma-separated.")
@_figure_option
@_preprocess_option
def sanity(model, weights, image, methods, classes, layers, out, preprocess):
    """Check that attention maps depend on the model (Adebayo et al. 2018).

    The weighted layers are re-initialized from the top down, one after another, and each
    method's map is compared with its original (rank correlation). A faithful method's
    correlation falls; the model's weights are restored afterwards.
    """
    from kvis.attention_maps import METHODS, method_functions
    from kvis.images import load_image
    from kvis.io import save_figure
    from kvis.models import resolve_classes
    from kvis.sanity import cascading_randomization, plot_sanity_check

    out = _figure_path(out)
    chosen = [m.strip() for m in methods.split(",")]
    if unknown := [m for m in chosen if m not in METHODS]:
        raise click.BadParameter(f"unknown method {unknown[0]!r}; choose from "
                                 f"{', '.join(METHODS)}", param_hint="--methods")
    net = _load(model, weights)
    picture = load_image(image, net, preprocessing=preprocess)
    wanted = resolve_classes(net, picture.x,
                             None if classes is None else _class_list(classes)[0])
    result = cascading_randomization(
        net, picture.x, method_functions(chosen, classes=wanted),
        layers=None if layers is None else [name.strip() for name in layers.split(",")])
    save_figure(plot_sanity_check(result, title=f"{picture.name}: cascading randomization"),
                out)
    click.echo("rank correlation with the original map after randomizing down to each layer:")
    for name, row in zip(result.methods, result.correlations):
        click.echo(f"  {name:16} " + " ".join(f"{value:5.2f}" for value in row))
    click.echo(f"wrote {out}")


@main.command()
@_model_options
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
@_figure_option
@_preprocess_option
def occlusion(model, weights, image, size, stride, layer, classes, fill, memory_mb, out,
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

    out = _figure_path(out)
    net = _load(model, weights)
    picture = load_image(image, net, preprocessing=preprocess)
    result = occlude(net, picture.x, size=size, stride=stride, fill=fill, layer=layer,
                     classes=None if classes is None else _class_list(classes)[0],
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
@_model_options
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--transform", "-t", type=click.Choice(["translate", "scale", "rotate"]),
              default="translate", show_default=True,
              help="Vertical translation (pixels), scaling (factor) or rotation (degrees).")
@click.option("--layers", "-l", help="Comma-separated layers to compare (default: the first "
                                     "stage and the penultimate layer).")
@click.option("--class", "classes", help="True class of the images, index or name (default: "
                                          "each image's top prediction).")
@_figure_option
@_preprocess_option
def invariance(model, weights, images, transform, layers, classes, out, preprocess):
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

    out = _figure_path(out)
    net = _load(model, weights)
    pictures = [load_image(image, net, preprocessing=preprocess) for image in images]
    result = curves_of(net, pictures, transform=transform, preprocessing=preprocess,
                       layers=None if layers is None else [n.strip() for n in layers.split(",")],
                       classes=None if classes is None else _class_list(classes)[0])
    save_figure(plot_invariance(result, class_names=class_names(net)), out)
    click.echo(f"{transform} values: " + " ".join(f"{v:g}" for v in result.values))
    click.echo(f"wrote {out}")


@main.command()
@_model_options
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
@_figure_option
@_preprocess_option
def correspondence(model, weights, folder, boxes, layers, trials, seed, out, preprocess):
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

    out = _figure_path(out)
    net = _load(model, weights)
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


@main.command("demo-images")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--per-class", default=1, show_default=True, type=click.IntRange(1, 40),
              help="Images of each of the 10 classes.")
def demo_images_command(folder, per_class):
    """Write real Fashion-MNIST test images that ship with kvis into FOLDER, as PNG files.

    They are the demo model's inputs: kvis features demo FOLDER/0_ankle_boot.png ...
    """
    import numpy as np

    from kvis.demo import CLASS_NAMES, demo_images
    from kvis.io import write_image

    images, labels = demo_images()
    written = 0
    for label, name in enumerate(CLASS_NAMES):
        slug = re.sub(r"[^a-z0-9]+", "_", name)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            write_image(Path(folder) / f"{i}_{slug}.png", images[index])
            written += 1
    click.echo(f"wrote {written} images to {folder}")


def _image_folder(folder):
    """The image files in a folder, sorted by name."""
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
    if not Path(folder).is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="IMAGE")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
    if not files:
        raise click.BadParameter(f"no image files in {folder}", param_hint="IMAGE")
    return files


def _class_list(text):
    """'281,tabby,5-7' -> [281, 'tabby', 5, 6, 7]."""
    classes = []
    for part in (part.strip() for part in text.split(",")):
        numeric = re.fullmatch(r"\d+\s*(-\s*\d+)?", part)
        classes += _index_list(part, "--class") if numeric else [part]
    return classes


def _index_list(text, option):
    """'3,17,40-47' -> [3, 17, 40, ..., 47]; None stays None."""
    if text is None:
        return None
    indices = []
    for part in text.split(","):
        if not re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", part):
            raise click.BadParameter(f"{text!r}: use indices and ranges like 3,17,40-47",
                                     param_hint=option)
        low, _, high = part.partition("-")
        indices += range(int(low), int(high or low) + 1)
    return indices
