"""`kvis demo-images`: the Fashion-MNIST test images that ship with kvis, as PNG files."""

import re
from pathlib import Path

import click

from kvis.cli import common
from kvis.cli.common import main


@main.command("demo-images")
@click.argument("folder", type=click.Path(file_okay=False))
@common.count_option("Images of each of the 10 classes.", default=1, high=40)
def demo_images_command(folder, count):
    """Write real Fashion-MNIST test images that ship with kvis into FOLDER, as PNG files.

    They are the demo model's inputs: kvis features demo FOLDER/0_ankle_boot.png ...
    """
    import numpy as np

    from kvis.core.demo import CLASS_NAMES, demo_images
    from kvis.core.io import write_image

    images, labels = demo_images()
    written = 0
    for label, name in enumerate(CLASS_NAMES):
        slug = re.sub(r"[^a-z0-9]+", "_", name)
        for i, index in enumerate(np.flatnonzero(labels == label)[:count]):
            write_image(Path(folder) / f"{i}_{slug}.png", images[index])
            written += 1
    click.echo(f"wrote {written} images to {folder}")
