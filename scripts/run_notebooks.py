"""Execute every notebook in notebooks/ in place, for the outputs stored with them.

Runs with the kernel of this Python (ipykernel's "python3", as the test suite does), in a
scratch folder so that nothing a notebook writes lands beside it; TensorFlow's C++ start-up
lines go to the kernel's own stderr, not into the outputs.

    .venv/bin/python scripts/run_notebooks.py
"""

import os
import tempfile
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as scratch:
            nbclient.NotebookClient(
                notebook, timeout=600, kernel_name="python3",
                extra_arguments=["--IPKernelApp.capture_fd_output=False"],
                resources={"metadata": {"path": scratch}}).execute()
        nbformat.write(notebook, path)
        print(f"ran {path.name}")


if __name__ == "__main__":
    main()
