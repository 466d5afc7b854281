"""The `kvis` command group, its shared options and helpers; commands live beside it."""

import os
import re
import warnings
from pathlib import Path

import click

from kvis.preprocessing import PREPROCESSING
from kvis.vocabulary import IMAGE_SUFFIXES, MODEL_NAMES, MODEL_SUFFIXES, SCORES


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


image_argument = click.argument("image", type=click.Path(exists=True, dir_okay=False))
figure_option = click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
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
        "--preprocess", type=click.Choice(list(PREPROCESSING)),
        help="How pixels become model input (default: recognised from the model; kvis stops "
             "and asks when it cannot tell).")(command)
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
    from kvis.models import folder_class_names, load_model

    names = folder_class_names(labels) if labels and Path(labels).is_dir() else labels
    return load_model(model, weights=None if weights.lower() == "none" else weights,
                      class_names=names, preprocessing=preprocess)


def figure_path(path):
    """--out as a Path, refused unless it names a figure format in a folder kvis can write."""
    from kvis.io import FIGURE_SUFFIXES

    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{path}: a figure file ends in {', '.join(FIGURE_SUFFIXES)}",
                                 param_hint="--out")
    return writable(path)


def writable(path):
    """`path` as a Path, after checking that a file can be written there (before any work)."""
    from kvis.io import check_writable

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
        numeric = re.fullmatch(r"\d+\s*(-\s*\d+)?", part)
        classes += index_list(part, "--class") if numeric else [part]
    return classes


def index_list(text, option):
    """'3,17,40-47' -> [3, 17, 40, ..., 47]; None stays None."""
    if text is None:
        return None
    indices = []
    for part in text.split(","):
        if not re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", part):
            raise click.BadParameter(f"{text!r}: use indices and ranges like 3,17,40-47",
                                     param_hint=option)
        low, _, high = part.partition("-")
        low, high = int(low), int(high or low)
        if high < low:
            raise click.BadParameter(f"{part.strip()!r} is a backwards range; write "
                                     f"{high}-{low}", param_hint=option)
        indices += range(low, high + 1)
    return indices
