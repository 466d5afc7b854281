"""Run the README's main command, `kvis report` (no arguments: the demo model), time it, and
save a screenshot of the page's top for the README.

Needs Chromium (Debian: apt-get install chromium) and Playwright (pip install kvis[test]).

Usage: python scripts/make_report_screenshot.py [--out docs/figures/report_top.png]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures/report_top.png"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([Path(sys.executable).with_name("kvis"), "report", "--out", folder],
                       check=True)
        print(f"kvis report (no arguments): {time.perf_counter() - start:.1f} s")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((Path(folder) / "index.html").as_uri())
            page.screenshot(path=args.out)
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
