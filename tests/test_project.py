"""The project's own promises: CI runs the README's test command, and the code is ruff clean."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text()
    assert f"\n{ci_command}\n" in readme


def test_ci_tests_the_installed_wheel_not_the_source_tree():
    import os

    import kvis

    if os.environ.get("CI"):
        assert "site-packages" in kvis.__file__, kvis.__file__


def test_code_is_ruff_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_resolves_to_itself_not_to_a_submodule():
    import importlib
    import types

    import kvis

    for module in (ROOT / "kvis").glob("*.py"):
        importlib.import_module(f"kvis.{module.stem}")  # submodules become attributes
    for name in kvis.__all__:
        value = getattr(kvis, name)
        assert isinstance(value, types.ModuleType) == (name == "objectives"), name
