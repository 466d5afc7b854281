"""The `kvis` command group, its shared options and helpers; commands live beside it."""

import os
import re
import sys
import warnings
from pathlib import Path

import click

from kvis.core.preprocessing import AFFINE_HELP, PREPROCESSING
from kvis.core.vocabulary import IMAGE_SUFFIXES, MODEL_NAMES, MODEL_SUFFIXES, SCORES

# Click 8.2+ raises a usage error whose message is the help of a group run bare (`kvis`);
# Click 8.1 prints it itself.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Command(click.Command):
    """A command that imports TensorFlow before it runs (after its options are parsed, so
    --help stays instant), quietly unless `kvis --verbose`, and compiles its passes with XLA
    under `kvis --xla`."""

    def invoke(self, ctx):
        for param in self.params:
            if isinstance(param.type, FigureFile) and ctx.params.get(param.name) is not None:
                writable(ctx.params[param.name])
        group = ctx.find_root().params
        _import_tensorflow(verbose=group.get("verbose", False))
        from kvis.core.runner import jit_compile

        with jit_compile(group.get("xla", False)):
            return super().invoke(ctx)


class _Group(click.Group):
    """Turns user mistakes into one line on stderr and warnings into 'warning:' lines."""

    command_class = _Command

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        """Click's main, with every error, usage errors included, as one line `Error: ...` on
        stderr (no usage block) and Click's exit status (2 for usage errors, else 1)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as help_shown:
            help_shown.show()
            sys.exit(help_shown.exit_code)
        except click.ClickException as error:
            lines = (line.strip() for line in error.format_message().splitlines())
            click.echo(f"Error: {' '.join(line for line in lines if line)}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        from kvis.core.errors import KvisError

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
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's start-up and log lines (hidden by default).")
@click.option("--xla", is_flag=True,
              help="Compile every pass with XLA (jit_compile): often faster on a GPU.")
def main(verbose, xla):
    """See what a convolutional network sees: layers, filters and feature maps.

    MODEL is vgg16, resnet50, demo (a small Fashion-MNIST CNN that ships with kvis), or the
    path of a .keras or .h5 model file, fine-tuned models with a nested base included.
    Layers inside a nested model are named by path: resnet50/conv5_block3_out.
    """


def _import_tensorflow(verbose=False):
    """Import TensorFlow, with the process's stderr closed unless `verbose`: its C++ start-up
    lines (oneDNN, CUDA probing) bypass every logging setting, TF_CPP_MIN_LOG_LEVEL included,
    which is set to 3 (errors hidden too) unless `verbose`."""
    if verbose:
        import tensorflow  # noqa: F401

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


class ModelSpec(click.ParamType):
    """MODEL: a name kvis knows, or a model file that exists (checked before TensorFlow starts)."""

    name = "model"

    def convert(self, value, param, ctx):
        if str(value).lower() in MODEL_NAMES:
            return str(value).lower()
        path = Path(value)
        if not path.is_file():
            self.fail(f"model file not found: {value} (or use one of: {', '.join(MODEL_NAMES)})",
                      param, ctx)
        if path.suffix.lower() not in MODEL_SUFFIXES:
            self.fail(f"{value}: a model file ends in {', '.join(MODEL_SUFFIXES)}", param, ctx)
        return str(path)


class DataSpec(click.ParamType):
    """DATA: "demo", or a folder or IDX file that exists (checked before TensorFlow starts)."""

    name = "data"

    def convert(self, value, param, ctx):
        if value == "demo" or Path(value).exists():
            return value
        self.fail(f"dataset not found: {value} (a folder of images, an IDX file, or demo)",
                  param, ctx)


class PreprocessSpec(click.ParamType):
    """--preprocess: a preset name or an `affine:...` spelling, checked before TensorFlow
    starts (the channels, once the model is loaded)."""

    name = "preprocessing"

    def convert(self, value, param, ctx):
        from kvis.core.errors import KvisError
        from kvis.core.preprocessing import parse

        try:
            return parse(value).name
        except KvisError as error:
            self.fail(str(error), param, ctx)


class FigureFile(click.ParamType):
    """--out: a figure file, as a Path. Its suffix is checked as it is parsed; whether kvis can
    write it, once every option is parsed (by the command, before TensorFlow starts)."""

    name = "file"

    def convert(self, value, param, ctx):
        from kvis.core.io import FIGURE_SUFFIXES

        if Path(value).suffix.lower() not in FIGURE_SUFFIXES:
            self.fail(f"{value}: a figure file ends in {', '.join(FIGURE_SUFFIXES)}", param, ctx)
        return Path(value)


image_argument = click.argument("image", type=click.Path(exists=True, dir_okay=False))
figure_option = click.option("--out", "-o", required=True, type=FigureFile(),
                              help="Figure file (.png, .pdf, .svg, .jpg).")


def score_option(default="logit"):
    """--score: which class score a command explains or records."""
    return click.option("--score", type=click.Choice(SCORES), default=default, show_default=True,
                        help="Class score: the pre-softmax logit or the softmax probability.")


def model_options(command):
    """MODEL with --weights, --labels and --preprocess: everything `load_network` takes."""
    return click.argument("model", type=ModelSpec())(network_options(command))


def network_options(command):
    """--weights, --labels and --preprocess, for a command whose MODEL argument is its own."""
    command = click.option(
        "--preprocess", type=PreprocessSpec(),
        help=f"How pixels become model input: {', '.join(PREPROCESSING)}, or {AFFINE_HELP} "
             "(default: recognised from the model; kvis stops and asks when it cannot "
             "tell).")(command)
    command = click.option(
        "--labels", type=click.Path(exists=True),
        help="Class names: a file (one per line, or JSON), or a dataset folder with one "
             "subfolder per class. Default: MODEL.labels.txt/.json beside a model file.")(command)
    return click.option("--weights", default="imagenet", show_default=True,
                        help="For vgg16/resnet50: imagenet (Keras cache), none, or a "
                             "weights file.")(command)


def load_network(model, weights, labels=None, preprocess=None):
    """The model named by the MODEL argument, with --weights ("none" means random), --labels
    and --preprocess."""
    from kvis.core.models import folder_class_names, load_model, model_info

    names = folder_class_names(labels) if labels and Path(labels).is_dir() else labels
    net = load_model(model, weights=None if weights.lower() == "none" else weights,
                     class_names=names, preprocessing=preprocess)
    if model_info(net).random_weights:
        click.echo(f"warning: {model} has random weights (--weights none): the classes it "
                   "names say nothing about ImageNet", err=True)
    return net


def figure_path(path):
    """--out as a Path, refused unless it names a figure format in a folder kvis can write."""
    from kvis.core.io import FIGURE_SUFFIXES

    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{path}: a figure file ends in {', '.join(FIGURE_SUFFIXES)}",
                                 param_hint="--out")
    return writable(path)


def writable(path):
    """`path` as a Path, after checking that a file can be written there (before any work)."""
    from kvis.core.io import check_writable

    check_writable(path)
    return Path(path)


def image_folder(folder):
    """The image files in a folder, sorted by name."""
    if not Path(folder).is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="IMAGE")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise click.BadParameter(f"no image files in {folder}", param_hint="IMAGE")
    return files


def class_list(text):
    """'281,tabby,5-7' -> [281, 'tabby', 5, 6, 7]."""
    classes = []
    for part in (part.strip() for part in text.split(",")):
        if not re.fullmatch(r"\d+\s*(-\s*\d+)?", part):
            classes.append(part)
            continue
        try:
            classes += indices(part)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--class") from None
    return classes


def indices(text):
    """'3,17,40-47' -> [3, 17, 40, ..., 47]: the one reading of a list of indices.

    Raises:
        ValueError: anything but indices and ascending ranges (the message says what to write).
    """
    found = []
    for part in text.split(","):
        if not re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", part):
            raise ValueError(f"{text!r}: use indices and ranges like 3,17,40-47")
        low, _, high = part.partition("-")
        low, high = int(low), int(high or low)
        if high < low:
            raise ValueError(f"{part.strip()!r} is a backwards range; write {high}-{low}")
        found += range(low, high + 1)
    return found


class ChannelList(click.ParamType):
    """--channels: channel indices and ranges, '0,3,5-9' -> [0, 3, 5, 6, 7, 8, 9]."""

    name = "channels"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return indices(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class LayerList(click.ParamType):
    """--layers: comma-separated layer names or paths, 'block1_conv1,base/conv2' -> a list."""

    name = "layers"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        names = [name.strip() for name in str(value).split(",") if name.strip()]
        if not names:
            self.fail(f"{value!r}: give layer names separated by commas", param, ctx)
        return names


def channels_option(help, default=None):
    """--channels: which channels (feature maps, filters), as indices and ranges."""
    return click.option("--channels", type=ChannelList(), default=default, metavar="INDICES",
                        show_default=default is not None,
                        help=f"{help} Indices and ranges, e.g. 0,3,5-9.")


class TargetSpec(click.ParamType):
    """--target: what to explain instead of a class, 'LAYER:CHANNEL' (the channel's mean) or
    'LAYER:CHANNEL@ROW,COL' (one neuron) -> (layer, channel, position or None)."""

    name = "target"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(.+):(\d+)(?:@(\d+),(\d+))?\s*", str(value))
        if not match:
            self.fail(f"{value!r}: write LAYER:CHANNEL (a channel) or LAYER:CHANNEL@ROW,COL "
                      "(one neuron)", param, ctx)
        layer, channel, row, col = match.groups()
        return layer, int(channel), None if row is None else (int(row), int(col))


def target_objective(spec):
    """The objective a --target names: a channel's mean, or one neuron."""
    from kvis.synthesis import objectives

    if spec is None:
        return None
    layer, channel, position = spec
    if position is None:
        return objectives.channel(layer, channel)
    return objectives.neuron(layer, channel, position)


def class_option(help):
    """--class: a class by index or name (lists and ranges where a command takes several)."""
    return click.option("--class", "classes", help=help)


def count_option(help, default, low=1, high=None):
    """--count: how many (channels to show, units to print, images to write)."""
    return click.option("--count", default=default, show_default=True,
                        type=click.IntRange(low, high), help=help)


def seed_option(help):
    """--seed: a random seed, 0 or above (NumPy refuses negative seeds)."""
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
                        help=help)


def layer_option(help, required=False):
    """--layer/-l: one layer's name or path (`-l` means --layer in every command)."""
    return click.option("--layer", "-l", required=required, help=help)


def layers_option(help, required=False):
    """--layers A,B: several layers (no short flag: -l is --layer)."""
    return click.option("--layers", type=LayerList(), required=required, help=help)


# --save-maps: a command's result as data, beside its figure.

def save_maps_option(command):
    """--save-maps FILE.npz: also write the command's result as named arrays."""
    return click.option(
        "--save-maps", type=click.Path(dir_okay=False), metavar="FILE.npz",
        help="Also write the result as data: an .npz of its arrays under their field names "
             "(maps, pixels, classes, scores...), the parameters as JSON under 'params'."
    )(command)


def maps_path(path):
    """--save-maps as a Path (None when not given), refused before any work unless it is an
    .npz file in a folder kvis can write."""
    if path is None:
        return None
    if Path(path).suffix.lower() != ".npz":
        raise click.BadParameter(f"{path}: the data file ends in .npz", param_hint="--save-maps")
    return writable(path)


def save_maps(path, result, *, shared=()):
    """Write `result` (or {name: result}: see `kvis.core.io.write_result`) to the .npz
    `path`, with the command's name and options among its parameters, and say so; nothing
    when `path` is None."""
    from kvis import __version__
    from kvis.core.io import write_result

    if path is None:
        return
    context = click.get_current_context()
    write_result(path, result, shared=shared,
                 params={"command": context.info_name, "kvis": __version__, **context.params})
    click.echo(f"wrote {path}")


class MethodList(click.ParamType):
    """--method: one attention method or several, 'grad-cam,saliency' -> a list, each checked
    against `kvis.core.vocabulary.ATTENTION_METHODS`."""

    name = "methods"

    def convert(self, value, param, ctx):
        import difflib

        from kvis.core.vocabulary import ATTENTION_METHODS

        if isinstance(value, list):
            return value
        methods = [method.strip() for method in str(value).split(",") if method.strip()]
        for method in methods:
            if method not in ATTENTION_METHODS:
                close = difflib.get_close_matches(method, ATTENTION_METHODS, n=3)
                hint = f"closest: {', '.join(close)}" if close else "choose from " + ", ".join(
                    ATTENTION_METHODS)
                self.fail(f"unknown attention method {method!r}; {hint}", param, ctx)
        if not methods or len(set(methods)) < len(methods):
            self.fail(f"{value!r}: give attention methods separated by commas, each once",
                      param, ctx)
        return methods
