import io
import sys

import pytest

from kvis.core import progress
from kvis.core.progress import progress_bar


def test_logs_and_pipes_get_a_line_every_few_seconds(monkeypatch):
    clock = iter([0.0, 1.0, 6.0, 7.0, 13.0, 14.0, 14.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar(4, "grad-cam", unit="batch") as bar:
        for _ in range(4):
            bar.update(1)
    lines = err.getvalue().splitlines()
    assert lines == ["grad-cam: 2/4 batch (50%), 6 s, 0.333 batch/s",
                     "grad-cam: 4/4 batch (100%), 13 s, 0.308 batch/s",
                     "grad-cam: 4/4 batch (100%), 14 s, 0.286 batch/s"]


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
