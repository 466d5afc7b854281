"""The catalogue of bad input, through the real `kvis` executable: every mistake is one line on
stderr, no traceback, a non-zero status, and nothing written."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

KVIS = Path(sys.executable).with_name("kvis")  # the console script of this install

# (arguments, a part of the one line): {in} is the folder of inputs; outputs go to the
# current folder, which must stay empty. Found before TensorFlow starts, half a second each:
BEFORE_TENSORFLOW = [
    # files and models (before TensorFlow starts)
    (["layers", "missing.keras"], "model file not found: missing.keras"),
    (["layers", "vgg17"], "model file not found: vgg17 (or use one of: demo, vgg16"),
    (["layers", "{in}/notes.txt"], "a model file ends in .keras, .h5"),
    (["features", "demo", "missing.png", "--layer", "block1_conv1", "--out", "m.png"],
     "File 'missing.png' does not exist"),
    (["invariance", "demo", "{in}/boot.png", "missing.png", "--out", "i.png"],
     "File 'missing.png' does not exist"),
    (["report", "demo", "{in}/photos"], "is a directory"),
    (["correspondence", "demo", "--images", "{in}/photos", "--boxes", "missing.json",
      "--out", "c.png"], "'missing.json' does not exist"),
    (["evolution", "nowhere", "--out", "e.png"], "'nowhere' does not exist"),
    (["topk", "demo", "nowhere", "--out", "scan"], "dataset not found: nowhere"),
    (["dissect", "demo", "nowhere", "--out", "d.png"], "'nowhere' does not exist"),
    # outputs
    (["filters", "demo", "--layer", "block1_conv1", "--out", "f.txt"],
     "f.txt: a figure file ends in .png, .pdf, .svg, .jpg"),
    (["filters", "demo", "--layer", "block1_conv1", "--out", "/proc/kvis/f.png"],
     "cannot write /proc/kvis/f.png"),
    (["sanity", "demo", "{in}/boot.png", "--out", "/proc/kvis/s.png"],
     "cannot write /proc/kvis/s.png"),
    # the command line itself
    (["nosuch"], "No such command 'nosuch'"),
    (["features", "demo", "{in}/boot.png", "--lay", "block1_conv1", "--out", "m.png"],
     "No such option '--lay'"),
    (["features", "demo"], "Missing argument 'IMAGE'"),
    (["filters", "demo", "--layer", "block1_conv1"], "Missing option '--out'"),
    (["attention", "demo", "{in}/boot.png", "--method", "gradcam", "--out", "a.png"],
     "unknown attention method 'gradcam'; closest: grad-cam"),
    (["sanity", "demo", "{in}/boot.png", "--methods", "lime", "--out", "s.png"],
     "unknown attention method 'lime'"),
    (["report", "demo", "--sections", "model,nope"], "unknown section 'nope'"),
    (["attention", "demo", "{in}/boot.png", "--target", "block3_conv1", "--out", "a.png"],
     "write LAYER:CHANNEL"),
    (["features", "demo", "{in}/boot.png", "--layers", ",", "--out", "maps"],
     "give layer names separated by commas"),
    # numbers and ranges
    (["features", "demo", "{in}/boot.png", "--layer", "block1_conv1", "--channels", "5-2",
      "--out", "m.png"], "'5-2' is a backwards range; write 2-5"),
    (["features", "demo", "{in}/boot.png", "--layer", "block1_conv1", "--channels", "x",
      "--out", "m.png"], "use indices and ranges like 3,17,40-47"),
    (["features", "demo", "{in}/boot.png", "--layer", "block1_conv1", "--count", "0",
      "--out", "m.png"], "0 is not in the range x>=1"),
    (["filters", "demo", "--layer", "block1_conv1", "--count", "0", "--out", "f.png"],
     "0 is not in the range x>=1"),
    (["maximize", "demo", "--layer", "block1_conv1", "--lr", "0", "--out", "m.png"],
     "0 is not in the range x>0"),
    (["maximize", "demo", "--layer", "block1_conv1", "--lr", "-1", "--out", "m.png"],
     "-1.0 is not in the range x>0"),
    (["maximize", "demo", "--layer", "block1_conv1", "--steps", "0", "--out", "m.png"],
     "0 is not in the range x>=1"),
    (["maximize", "demo", "--layer", "block1_conv1", "--size", "4", "--out", "m.png"],
     "4 is not in the range x>=8"),
    (["maximize", "demo", "--layer", "block1_conv1", "--seed", "-1", "--out", "m.png"],
     "-1 is not in the range x>=0"),
    (["invert", "demo", "{in}/boot.png", "--layers", "fc1", "--steps", "0", "--out", "i.png"],
     "0 is not in the range x>=1"),
    (["occlusion", "demo", "{in}/boot.png", "--size", "0", "--out", "o.png"],
     "0 is not in the range x>=1"),
    (["occlusion", "demo", "{in}/boot.png", "--stride", "0", "--out", "o.png"],
     "0 is not in the range x>=1"),
    (["occlusion", "demo", "{in}/boot.png", "--fill", "300", "--out", "o.png"],
     "300.0 is not in the range 0<=x<=255"),
    (["occlusion", "demo", "{in}/boot.png", "--memory-mb", "0", "--out", "o.png"],
     "0 is not in the range x>=1"),
    (["correspondence", "demo", "--images", "{in}/photos", "--boxes", "{in}/boxes.json",
      "--trials", "0", "--out", "c.png"], "0 is not in the range x>=1"),
    (["topk", "demo", "demo", "--keep", "0", "--out", "scan"], "0 is not in the range x>=1"),
    (["topk", "demo", "demo", "--batch-size", "0", "--out", "scan"],
     "0 is not in the range x>=1"),
    (["dissect", "demo", "{in}/photos", "--quantile", "1.5", "--out", "d.png"],
     "1.5 is not in the range 0<x<1"),
    (["dissect", "demo", "{in}/photos", "--cut", "2", "--out", "d.png"],
     "2.0 is not in the range 0<=x<=1"),
    (["demo-images", "shipped", "--count", "41"], "41 is not in the range 1<=x<=40"),
    (["demo-images", "shipped", "--count", "0"], "0 is not in the range 1<=x<=40"),
    (["features", "demo", "{in}/boot.png", "--layer", "block1_conv1", "--preprocess",
      "affine:mean=1,std=0", "--out", "m.png"], "std"),
]

# Found once the model is loaded, 7 to 12 s each on two cores:
ONCE_LOADED = [
    (["layers", "{in}/notes.keras"], "is not a Keras model file"),
    (["features", "demo", "{in}/boot.png", "--layer", "block9_conv1", "--out", "new/m.png"],
     "no layer 'block9_conv1' in model 'kvis_demo'; closest: block3_conv1"),
    (["features", "demo", "{in}/notes.png", "--layer", "block1_conv1", "--out", "m.png"],
     "cannot read image"),
    (["attention", "demo", "{in}/photos", "--out", "a.png"], "is a folder: pass --batch"),
    (["attention", "demo", "{in}/boot.png", "--class", "12", "--out", "a.png"],
     "class index 12 is out of range (0-9)"),
    (["attention", "demo", "{in}/boot.png", "--class", "-1", "--out", "a.png"],
     "class index -1 is out of range (0-9)"),
    (["maximize", "demo", "--class", "5-2", "--out", "m.png"], "'5-2' is a backwards range"),
    (["maximize", "demo", "--layer", "block1_conv1", "--size", "100000", "--out", "m.png"],
     "images of 100000x100000 need about"),
    (["filters", "demo", "--layer", "predictions", "--out", "f.png"],
     "layer 'predictions' (Dense) has no 2-D convolution kernel"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A boot image, a folder of photos, a text file named .keras, one named .png."""
    folder = tmp_path_factory.mktemp("inputs")
    from kvis.core.demo import demo_images

    cv2.imwrite(str(folder / "boot.png"), demo_images()[0][0])
    (folder / "photos").mkdir()
    cv2.imwrite(str(folder / "photos" / "a.png"), np.full((28, 28), 90, np.uint8))
    (folder / "boxes.json").write_text('{"a.png": [2, 2, 8, 8]}')
    for name in ("notes.keras", "notes.png", "notes.txt"):
        (folder / name).write_text("not what the name says\n")
    return folder


def _run(args, cwd):
    """Run kvis in `cwd` with this checkout's code; (status, stderr, stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # kvis itself keeps TensorFlow quiet
    done = subprocess.run([str(KVIS), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stderr, done.stdout


@pytest.mark.parametrize("catalogue", [
    BEFORE_TENSORFLOW, pytest.param(ONCE_LOADED, marks=pytest.mark.slow)],
    ids=["before_tensorflow", "once_loaded"])
def test_every_bad_input_is_one_line_a_non_zero_status_and_nothing_written(
        catalogue, inputs, tmp_path):
    before = sorted(inputs.rglob("*"))
    folders = [tmp_path / f"case{i}" for i in range(len(catalogue))]
    for folder in folders:
        folder.mkdir()
    runs = [([a.format(**{"in": inputs}) for a in args], folder)
            for (args, _), folder in zip(catalogue, folders)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda run: _run(*run), runs))
    failures = []
    for (args, message), folder, (status, stderr, stdout) in zip(catalogue, folders, results):
        lines = stderr.splitlines()
        if (status == 0 or len(lines) != 1 or not lines[0].startswith("Error: ")
                or message not in lines[0] or "Traceback" in stderr + stdout
                or list(folder.iterdir())):
            failures.append(f"kvis {' '.join(args)}: status {status}, written "
                            f"{[p.name for p in folder.iterdir()]}, stderr {stderr!r}")
    assert not failures, "\n".join(failures)
    assert sorted(inputs.rglob("*")) == before
