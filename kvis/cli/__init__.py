"""The `kvis` command: thin wrappers that parse options, call one public function and save.

Importing the command modules registers their commands on the group.
"""

from kvis.cli import (  # noqa: F401
    analyses,
    dissection,
    explanation,
    model,
    projection,
    report,
    scan,
    synthesis,
    training,
)
from kvis.cli.common import main

__all__ = ["main"]
