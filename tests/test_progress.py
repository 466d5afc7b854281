import io
import sys

import pytest

from kvis.core import progress
from kvis.core.progress import progress_bar


def _log_lines(monkeypatch, clock, updates, total=4):
    """The lines a log gets for `updates` with time.monotonic() reading `clock`."""
    clock = iter(clock)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar(total, "grad-cam", unit="batch") as bar:
        for count in updates:
            bar.update(count)
    return err.getvalue().splitlines()


def test_logs_and_pipes_get_a_line_every_few_seconds_and_the_last_once(monkeypatch):
    # start, four updates, finish: the last update's line is the final one
    lines = _log_lines(monkeypatch, [0.0, 1.0, 6.0, 7.0, 13.0, 14.0], [1, 1, 1, 1])
    assert lines == ["grad-cam: 2/4 batch (50%), 6 s, 0.333 batch/s",
                     "grad-cam: 4/4 batch (100%), 13 s, 0.308 batch/s"]


def test_the_end_is_said_when_the_last_line_was_earlier(monkeypatch):
    lines = _log_lines(monkeypatch, [0.0, 6.0, 8.0, 9.0], [2, 2])
    assert lines == ["grad-cam: 2/4 batch (50%), 6 s, 0.333 batch/s",
                     "grad-cam: 4/4 batch (100%), 9 s, 0.444 batch/s"]


@pytest.mark.parametrize("enabled", [False, True])
def test_progress_false_is_silent_and_short_work_says_nothing_in_a_log(monkeypatch, enabled):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar(3, "occlusion", progress=enabled) as bar:
        bar.update(3)
    assert err.getvalue() == ""


def test_jupyter_without_ipywidgets_gets_the_text_bar_not_a_warning(monkeypatch):
    from tqdm import std

    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
    assert progress._notebook_bar() is std.tqdm
