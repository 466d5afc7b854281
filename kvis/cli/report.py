"""The `kvis report` command: every view of a model for one image, as one HTML page."""

from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main
from kvis.core.vocabulary import REPORT_SECTIONS


@main.command()
@click.argument("model", required=False, type=common.ModelSpec())
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@common.network_options
@click.option("--out", "-o", default="report", show_default=True, type=click.Path(),
              help="A folder, which receives index.html, or an .html file.")
@common.class_option("The class the attention maps and the occlusion explain, index or name "
                     "(default: the top prediction).")
@click.option("--dataset", type=common.DataSpec(),
              help="Add the dataset views (top-9 examples, dead filters): a folder of images, "
                   "an IDX file, or demo.")
@click.option("--scan", "scan_folder", type=click.Path(exists=True, file_okay=False),
              help="Draw the dataset views from an earlier `kvis topk`/`kvis stats` OUT folder "
                   "(its index.json) instead of scanning again.")
@click.option("--microscope", type=click.Path(exists=True, file_okay=False),
              help="A `kvis microscope` site of MODEL (its --out folder): each unit the page "
                   "shows links to its page there.")
@click.option("--sections", callback=lambda ctx, param, text: _sections(text),
              help=f"Comma-separated sections to include, in page order: "
                                 f"{', '.join(REPORT_SECTIONS)} (default: all).")
@click.option("--fast", is_flag=True,
              help="A quick look: fewer layers, filters and methods, shorter optimizations.")
def report(model, image, weights, labels, preprocess, out, classes, dataset, scan_folder,
           microscope, sections, fast):
    """Write one self-contained HTML page of what MODEL sees in IMAGE.

    The page has a section per view: the layers with their receptive fields, filters,
    feature maps, activation maximization, deconvnet projections, attention maps and
    occlusion; with --dataset or --scan also the top-9 examples of each feature map and its
    dead and rarely active filters. A view MODEL does not support is left out and the page
    says why. Images are inline: the page opens offline and can be shared as one file. With
    --microscope, each unit shown links to its page in that site (relative links).

    With no arguments: the demo model, one of its shipped Fashion-MNIST test images, and the
    400 shipped test images as the dataset (about 35 s on 2 CPU cores). On VGG16 or ResNet50
    without a GPU the full page takes many minutes, activation maximization most of them:
    use --fast, or leave it out with --sections.

    \b
    kvis report
    kvis report vgg16 cat.jpg --out cat_report/ --fast
    kvis report simpsons.keras bart.jpg --class homer --scan scan/ --sections attention,occlusion
    """
    from kvis.core.images import load_image
    from kvis.dataset.examples import read_index, scanned_data
    from kvis.dataset.sources import image_source
    from kvis.report.page import write_report
    from kvis.report.sections import build_report

    if model is None:
        model, dataset = "demo", dataset or (None if scan_folder else "demo")
    if image is None and model != "demo":
        raise click.UsageError(f"give an IMAGE for {model} (only the demo model has a "
                               "shipped one)")
    target = Path(out) if Path(out).suffix.lower() == ".html" else Path(out) / "index.html"
    common.writable(target)
    found = read_index(Path(scan_folder) / "index.json") if scan_folder else None
    data = dataset or (scanned_data(Path(scan_folder) / "index.json") if scan_folder else None)
    if data is not None:
        image_source(data)  # a folder with no images is refused now, before any work
    net = common.load_network(model, weights, labels, preprocess)
    picture = load_image(image, net) if image else _shipped_image(net)
    page = write_report(build_report(net, picture, classes=_one_class(classes), sections=sections,
                                     fast=fast, data=data, found=found,
                                     microscope=microscope), target)
    click.echo(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB)")


def _sections(text):
    if text is None:
        return None
    chosen = [key.strip() for key in text.split(",") if key.strip()]
    if unknown := [key for key in chosen if key not in REPORT_SECTIONS]:
        raise click.BadParameter(f"unknown section {unknown[0]!r}; choose from "
                                 f"{', '.join(REPORT_SECTIONS)}", param_hint="--sections")
    return chosen


def _one_class(text):
    if text is None:
        return None
    classes = common.class_list(text)
    if len(classes) != 1:
        raise click.BadParameter(f"{text!r}: a report explains one class", param_hint="--class")
    return classes[0]


def _shipped_image(net):
    """The first Fashion-MNIST test image that ships with kvis, named by its class."""
    from dataclasses import replace

    from kvis.core.demo import CLASS_NAMES, demo_images
    from kvis.core.images import load_image

    images, labels = demo_images()
    return replace(load_image(images[0], net),
                   name=f"Fashion-MNIST test image 0 ({CLASS_NAMES[labels[0]]})")
