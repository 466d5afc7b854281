"""The `kvis` command: thin wrappers that parse options, call one public function and save.

One module per command, named after it; shared options and helpers live in `common`.
Importing the command modules registers their commands on the group.
"""

from kvis.cli import (  # noqa: F401
    attention,
    correspondence,
    deconv,
    demo_images,
    dissect,
    evolution,
    features,
    filters,
    invariance,
    invert,
    layers,
    maximize,
    microscope,
    occlusion,
    report,
    sanity,
    stats,
    topk,
)
from kvis.cli.common import main

__all__ = ["main"]
