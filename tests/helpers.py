"""Helpers that only the tests use (kept out of the kvis package)."""

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.dataset.topk import TopK, merge


def batch_top_k(activations, image_ids, k):
    """The top-k state of one batch by a single `tf.math.top_k` over every position: the
    one-stage reference for the scan's two-stage search.

    `tf.math.top_k` puts the lower index first among equal values, and the flat index of an
    activation grows with (image, row, col): with increasing image ids that is exactly the
    total order that makes states mergeable.

    Args:
        activations: float (N, h, w, C).
        image_ids: int (N,), increasing.
        k: activations to keep per channel.

    Returns:
        A `TopK` with min(k, N*h*w) entries per channel, padded to k with empties.
    """
    image_ids = np.asarray(image_ids, np.int64)
    if np.any(np.diff(image_ids) <= 0):
        raise KvisError("the image ids of a batch must increase")
    count, height, width, channels = activations.shape
    per_channel = tf.transpose(tf.reshape(tf.cast(activations, tf.float32), (-1, channels)))
    values, flat = tf.math.top_k(per_channel, k=min(k, count * height * width))
    image, row, col = np.unravel_index(flat.numpy(), (count, height, width))
    found = TopK(values.numpy(), image_ids[image], np.stack([row, col], -1).astype(np.int32))
    return merge(found, TopK.empty(channels, k))


def update(state, activations, image_ids):
    """A top-k state after also seeing a batch of a layer's activations (N, h, w, C)."""
    if activations.shape[-1] != len(state.values):
        raise KvisError(f"a batch with {activations.shape[-1]} channels for a top-k state "
                        f"of {len(state.values)}")
    return merge(state, batch_top_k(activations, image_ids, state.k))


def compatibility_matrix():
    """`scripts/compatibility.py` as a module: its architectures, techniques and table."""
    path = Path(__file__).parents[1] / "scripts" / "compatibility.py"
    spec = importlib.util.spec_from_file_location("compatibility", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def browser_page():
    """A Chromium page driven by Playwright, 1200 x 800, that records console errors and
    warnings and page errors in `page.problems` and every URL it requests in
    `page.requests`. Skips the test where Chromium or Playwright is missing (fails instead
    when KVIS_REQUIRE_BROWSER is set, as in CI)."""
    executable = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                      "google-chrome"))), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, reason = None, "Playwright is not installed (pip install kvis[test])"
    else:
        reason = None if executable else "no Chromium on PATH (Debian: apt-get install chromium)"
    if reason:
        if os.environ.get("KVIS_REQUIRE_BROWSER"):
            pytest.fail(f"KVIS_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.problems, page.requests = [], []
        page.on("console", lambda message: message.type in ("error", "warning") and
                page.problems.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
        page.on("request", lambda request: page.requests.append(request.url))
        try:
            yield page
        finally:
            browser.close()
