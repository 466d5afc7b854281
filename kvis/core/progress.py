"""Progress of long work, the same for every technique: a bar on a terminal or in Jupyter, and a
line every few seconds when the output is a log, CI or a pipe.

Every function that can take more than a few seconds takes `progress=True` (show it) or
`progress=False` (stay silent) and reports through `progress_bar`.
"""

import contextlib
import importlib.util
import sys
import time

from tqdm import std

LOG_EVERY_S = 5.0


@contextlib.contextmanager
def progress_bar(total, desc, *, unit="batch", progress=True):
    """A progress reporter: `with progress_bar(n, "grad-cam") as bar: bar.update(k)`.

    Args:
        total: the amount of work, in `unit`s.
        desc: what is being done, shown first.
        unit: what one step of `update` counts.
        progress: False for no output at all.

    Yields:
        An object with `update(count)`.
    """
    if not progress:
        yield _Silent()
    elif _in_jupyter() or sys.stderr.isatty():
        bar_class = _notebook_bar() if _in_jupyter() else std.tqdm
        with bar_class(total=total, desc=desc, unit=unit, leave=False) as bar:
            yield bar
    else:
        log = _LogLines(total, desc, unit)
        try:
            yield log
        finally:
            log.finish()


class _Silent:
    def update(self, count=1):
        pass


class _LogLines:
    """Progress for logs and pipes: one line every `LOG_EVERY_S` seconds, and one at the end
    unless the last line already said it (work under `LOG_EVERY_S` says nothing)."""

    def __init__(self, total, desc, unit):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.start = 0, time.monotonic()
        self.last, self.shown = self.start, 0

    def update(self, count=1):
        self.done += count
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            self._write(now)

    def finish(self):
        now = time.monotonic()
        if self.done != self.shown and now - self.start >= LOG_EVERY_S:
            self._write(now)

    def _write(self, now):
        self.shown = self.done
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = now - self.start
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {elapsed:.0f} s, "
              f"{self.done / max(elapsed, 1e-9):.3g} {self.unit}/s", file=sys.stderr, flush=True)


def _in_jupyter():
    shell = sys.modules.get("IPython")
    shell = shell and shell.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _notebook_bar():
    """The widget bar where ipywidgets is installed, else the text bar (no warning)."""
    if importlib.util.find_spec("ipywidgets") is None:
        return std.tqdm
    from tqdm import notebook

    return notebook.tqdm
