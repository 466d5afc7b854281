"""Build the demo model's microscope with the README's command, time it, and save a screenshot
of one unit page for the README.

Needs Chromium (Debian: apt-get install chromium) and Playwright (pip install kvis[test]).

Usage: python scripts/make_microscope_screenshot.py [--out docs/figures/microscope_unit.png]
       [--site FOLDER] [--unit block3_pool:5]
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
    parser.add_argument("--out", type=Path, default=Path("docs/figures/microscope_unit.png"))
    parser.add_argument("--site", type=Path,
                        help="Build the site in this folder and keep it (default: a temporary "
                             "one); a site already there is finished, not rebuilt.")
    parser.add_argument("--unit", default="block3_pool:5", help="The unit shown, LAYER:UNIT.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        site = args.site or Path(folder) / "site"
        start = time.perf_counter()
        subprocess.run([Path(sys.executable).with_name("kvis"), "microscope", "demo", "demo",
                        "--out", site, "--resume"], check=True)  # a finished --site: no work
        print(f"kvis microscope demo demo: {time.perf_counter() - start:.1f} s")
        layer, unit = args.unit.rsplit(":", 1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1100, "height": 1100})
            page.goto((site / "layers" / layer / f"{unit}.html").as_uri())
            page.screenshot(path=args.out)
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
