"""Every notebook in notebooks/ runs top to bottom on the installed kvis, offline, and its
outputs carry no error and none of TensorFlow's start-up lines."""

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
STARTUP_NOISE = ("oneDNN custom operations", "cuda drivers", "absl::InitializeLog")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(path, as_version=4)
    # The kernel of this Python (ipykernel's native "python3"); TensorFlow's C++ start-up
    # lines go to the kernel's own stderr, not into the outputs.
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3",
        extra_arguments=["--IPKernelApp.capture_fd_output=False"],
        resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            text = output.get("text", "")
            assert not any(noise in text for noise in STARTUP_NOISE), text[:300]
