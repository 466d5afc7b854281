"""A dataset scan's OUT folder, shared by `kvis topk` and `kvis stats`: the scan options, and
a scan that never silently overwrites another (--resume continues it, --overwrite replaces it)."""

from pathlib import Path

import click

from kvis.cli.common import DataSpec, layers_option, load_network, writable
from kvis.dataset.topk import STRONGEST


def scan_options(command):
    """DATA, --layers, --keep, --strongest, --batch-size, --out (a folder), --resume,
    --overwrite: a dataset scan."""
    for option in reversed([
        click.argument("data", type=DataSpec()),
        layers_option("Comma-separated spatial layers (default: the last layer of each "
                      "resolution)."),
        click.option("--keep", default=9, show_default=True, type=click.IntRange(1),
                     help="Strongest activations kept per channel (Zeiler & Fergus: 9)."),
        click.option("--strongest", type=click.Choice(STRONGEST), default="images",
                     show_default=True,
                     help="What the --keep strongest of a channel are: images (each image once, "
                          "at its strongest position, as in Zeiler & Fergus) or positions (one "
                          "image can fill several places)."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
                     help="Images per forward pass."),
        click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
                     help="Folder for the index (index.json), the checkpoint and figures."),
        click.option("--resume", is_flag=True,
                     help="Continue the scan in OUT from its checkpoint.npz."),
        click.option("--overwrite", is_flag=True,
                     help="Replace the scan in OUT: its index, checkpoint and figures are "
                          "removed first."),
    ]):
        command = option(command)
    return command


def topk_figure(folder, keep, layer):
    """The file of one layer's top-k figure in a scan's OUT folder."""
    return Path(folder) / f"top{keep}_{layer.replace('/', '__')}.png"


def run_scan(model, weights, labels, preprocess, *, data, layers, keep, strongest, batch_size,
             out, resume, overwrite, statistics=True):
    """Load the model, scan DATA with a checkpoint in OUT, write OUT/index.json. A scan
    already in OUT is continued (--resume) or replaced (--overwrite), never silently
    overwritten; an interrupted scan says how to continue it."""
    from kvis.dataset.examples import write_index
    from kvis.dataset.scan import scan
    from kvis.dataset.sources import image_source

    folder = Path(out)
    writable(folder / "index.json")
    _make_room(folder, resume=resume, overwrite=overwrite)
    checkpoint = folder / "checkpoint.npz"
    net = load_network(model, weights, labels, preprocess)
    if resume and checkpoint.is_file():
        click.echo(f"resuming at {_scanned_so_far(folder)}", err=True)
    try:
        found = scan(net, data, layers, count=keep, strongest=strongest, statistics=statistics,
                     batch_size=batch_size, checkpoint=checkpoint, resume=resume)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted at {_scanned_so_far(folder)}; to continue, run the same "
                   "command with --resume", err=True)
        raise SystemExit(130) from None
    write_index(found, folder / "index.json", names=image_source(data).names, data=data)
    click.echo(f"scanned {found.images} images ({len(found.skipped)} skipped) of {found.source}")
    return net, found


def _make_room(folder, *, resume, overwrite):
    """Refuse to scan into a folder that holds a scan unless --resume or --overwrite says what
    to do with it; for --overwrite, remove what that scan wrote."""
    if resume and overwrite:
        raise click.UsageError("--resume continues the scan in OUT and --overwrite replaces "
                               "it: pass one of them")
    written = _scan_files(folder)
    if resume or not written:
        return
    if not overwrite:
        raise click.ClickException(f"{folder} holds a scan of {_scanned_so_far(folder)}; pass "
                                   "--resume to finish it or --overwrite to replace it")
    for path in written:
        path.unlink()


def _scan_files(folder):
    """The files an earlier `kvis topk`/`kvis stats` wrote in `folder` (its index, checkpoint,
    statistics and the top-k figures its index names)."""
    from kvis.core.errors import KvisError
    from kvis.dataset.examples import read_index

    paths = [folder / "index.json", folder / "checkpoint.npz", folder / "statistics.png"]
    try:
        earlier = read_index(folder / "index.json")
        paths += [topk_figure(folder, earlier.count, layer) for layer in earlier.layers]
    except KvisError:  # no index (an interrupted scan has drawn nothing yet), or not one
        pass
    return [path for path in paths if path.is_file()]


def _scanned_so_far(folder):
    """'120 of 400 images': how far the scan in `folder` got (its checkpoint, else its index)."""
    from kvis.dataset.examples import read_index
    from kvis.dataset.scan import checkpoint_progress

    if (folder / "checkpoint.npz").is_file():
        done, total = checkpoint_progress(folder / "checkpoint.npz")
    else:
        earlier = read_index(folder / "index.json")
        done = total = earlier.images + len(earlier.skipped)
    return f"{done:,} of {total:,} images" if total is not None else f"{done:,} images"
