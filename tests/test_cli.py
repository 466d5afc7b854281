import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import nested_functional, tiny_base

from kvis.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def boot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_images")
    result = run("demo-images", folder)
    assert result.exit_code == 0, result.output
    return folder / "0_ankle_boot.png"


def _read(path):
    image = cv2.imread(str(path))
    assert image is not None and image.std() > 0, f"{path} is not a drawn figure"
    return image


def test_help_reads_well():
    result = run("--help")
    assert result.exit_code == 0 and "vgg16, resnet50, demo" in result.output
    for command in ("layers", "filters", "features", "demo-images"):
        assert run(command, "--help").exit_code == 0


def test_demo_images_are_the_shipped_test_images(tmp_path):
    from kvis.core.demo import demo_images

    assert run("demo-images", tmp_path, "--count", 2).exit_code == 0
    assert len(list(tmp_path.glob("*.png"))) == 20
    images, labels = demo_images()
    first_bag = images[np.flatnonzero(labels == 8)[0], ..., 0]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "0_bag.png"), 0), first_bag)


def test_layers_prints_the_inventory():
    result = run("layers", "demo")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()}
    assert rows["block2_pool"][-3:] == ["16x16", "4x4", "1.5,1.5"]
    assert rows["predictions"][1:] == ["Dense", "(None,", "10)", "1,290"]


def test_filters_and_features_write_figures(tmp_path, boot):
    result = run("filters", "demo", "--layer", "block1_conv1", "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    _read(tmp_path / "f.png")
    result = run("features", "demo", boot, "--layer", "block2_conv1", "--out", tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    _read(tmp_path / "m.png")
    result = run("features", "demo", boot, "--layer", "block3_conv1", "--summary",
                 "--channels", "1,4-6", "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_features_all_writes_one_figure_per_layer_and_an_overview(tmp_path, boot):
    result = run("features", "demo", boot, "--all", "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == ["000_block1_conv1.png", "001_block1_conv2.png", "002_block1_pool.png",
                     "003_block2_conv1.png", "004_block2_conv2.png", "005_block2_pool.png",
                     "006_block3_conv1.png", "007_block3_pool.png", "overview.png"]
    result = run("features", "demo", boot, "--layers", "block2_conv1,block1_conv1", "--count",
                 4, "--out", tmp_path / "two")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == ["000_block2_conv1.png", "001_block1_conv1.png", "overview.png"]


def test_rgb_image_for_the_grayscale_demo_is_converted_and_said(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), np.full((40, 30, 3), 120, np.uint8))
    result = run("features", "demo", tmp_path / "rgb.png", "--layer", "block1_conv1",
                 "--out", tmp_path / "m.png")
    assert result.exit_code == 0
    assert "warning: rgb.png: converted to grayscale" in result.stderr
    assert "warning: rgb.png: resized from 40x30 to 28x28" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["features", "demo", "missing.png", "--layer", "block1_conv1", "--out", "m.png"],
     "Error: Invalid value for 'IMAGE': File 'missing.png' does not exist."),
    (["features", "demo", "{boot}", "--layer", "block9_conv1", "--out", "m.png"],
     "Error: no layer 'block9_conv1' in model 'kvis_demo'; closest: block3_conv1"),
    (["features", "demo", "{boot}", "--layer", "fc1", "--out", "m.png"],
     "Error: feature maps needs a spatial layer; 'fc1' (Dense) has output shape (None, 128)"),
    (["features", "demo", "{boot}", "--out", "m.png"],
     "give one of --layer, --layers or --all"),
    (["filters", "demo", "--layer", "predictions", "--out", "f.png"],
     "Error: layer 'predictions' (Dense) has no 2-D convolution kernel; conv layers: block1_conv1"),
    (["filters", "demo", "--layer", "block1_conv1", "--out", "f.txt"], "a figure file ends in"),
    (["layers", "nosuch.keras"], "model file not found: nosuch.keras (or use one of: demo"),
    (["features", "demo", "{boot}", "--layer", "block1_conv1", "--channels", "5-2",
      "--out", "m.png"], "'5-2' is a backwards range; write 2-5"),
    (["filters", "demo", "--layer", "block1_conv1", "--out", "/proc/kvis/f.png"],
     "Error: cannot write /proc/kvis/f.png: "),
    (["features", "demo", "{boot}", "--layer", "block1_conv1", "--channels", "x",
      "--out", "m.png"],
     "use indices and ranges like 3,17,40-47"),
])
def test_user_mistakes_get_one_line_and_no_traceback(args, message, boot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*[a.format(boot=boot) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_file_mistakes_are_reported_before_tensorflow_starts(tmp_path):
    import subprocess
    import sys

    script = ("import sys\nfrom kvis.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n"
              "    print('tensorflow' in sys.modules, exit.code)")
    for args in (["features", "demo", "missing.png", "--all", "--out", "m"],
                 ["occlusion", "nosuch.keras", "x.png", "--out", "o.png"],
                 ["layers", "missing.keras"]):
        result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                                text=True, cwd=tmp_path)
        assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
        assert "does not exist" in result.stderr or "not found" in result.stderr


def test_unknown_preprocessing_stops_with_one_line_naming_the_option(tmp_path):
    nested_functional(tiny_base()).save(tmp_path / "mine.keras")
    cv2.imwrite(str(tmp_path / "x.png"), np.full((16, 16, 3), 9, np.uint8))
    result = run("features", tmp_path / "mine.keras", tmp_path / "x.png", "--layer", "base/conv2",
                 "--out", tmp_path / "m.png")
    assert result.exit_code == 1 and not (tmp_path / "m.png").exists()
    assert "cannot tell how model 'finetuned_fn' expects its pixels" in result.output
    assert "--preprocess" in result.output and "Traceback" not in result.output


def test_nested_model_file_through_the_cli(tmp_path):
    nested_functional(tiny_base()).save(tmp_path / "finetuned.keras")
    result = run("layers", tmp_path / "finetuned.keras")
    assert result.exit_code == 0 and "base/conv2" in result.output
    cv2.imwrite(str(tmp_path / "x.png"), np.random.default_rng(0).integers(0, 255, (16, 16, 3)))
    result = run("features", tmp_path / "finetuned.keras", tmp_path / "x.png", "--layer",
                 "base/conv2", "--preprocess", "unit", "--out", tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    _read(tmp_path / "m.png")


@pytest.mark.integration
def test_vgg16_and_resnet50_through_the_cli(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.random.default_rng(0).integers(0, 255, (224, 224, 3)))
    for model, layer in (("vgg16", "block1_conv1"), ("resnet50", "conv1_conv")):
        result = run("filters", model, "--weights", "none", "--layer", layer,
                     "--out", tmp_path / f"{model}_f.png")
        assert result.exit_code == 0, result.output
        last = "block5_pool" if model == "vgg16" else "conv5_block3_out"
        result = run("features", model, tmp_path / "x.png", "--weights", "none", "--layers",
                     f"{layer},{last}", "--out", tmp_path / model)
        assert result.exit_code == 0, result.output
        assert len(list((tmp_path / model).glob("*.png"))) == 3


@pytest.mark.integration
def test_fine_tuned_resnet50_saved_to_keras(tmp_path):
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    model = keras.Sequential([keras.Input((64, 64, 3)), base,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    model.save(tmp_path / "simpsons.keras")
    result = run("layers", tmp_path / "simpsons.keras")
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines()
               if line.startswith("resnet50/conv5_block3_out "))
    assert row.split()[-3:] == ["483x483", "32x32", "0,0"]
    cv2.imwrite(str(tmp_path / "x.png"), np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
    for args in (["filters", tmp_path / "simpsons.keras", "--layer", "resnet50/conv1_conv",
                  "--out", tmp_path / "f.png"],
                 ["features", tmp_path / "simpsons.keras", tmp_path / "x.png", "--layer",
                  "resnet50/conv5_block3_out", "--out", tmp_path / "m.png"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
    assert "preprocessing" not in result.stderr  # recognised as a ResNet50: caffe-style


@pytest.mark.slow
def test_maximize_filters_and_classes(tmp_path):
    result = run("maximize", "demo", "--layer", "block2_conv2", "--channels", "0-3",
                 "--steps", "16", "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    _read(tmp_path / "f.png")
    result = run("maximize", "demo", "--class", "0-1,bag", "--steps", "16", "--param", "pixel",
                 "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    names = [line.split(": logit ")[0] for line in result.stdout.splitlines()[:3]]
    assert names == ["t-shirt/top", "trouser", "bag"]


def test_invert_prints_the_errors(tmp_path, boot):
    result = run("invert", "demo", boot, "--layers", "block1_conv1,fc1", "--steps", "50",
                 "--out", tmp_path / "inv.png")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # progress goes to stderr
    assert lines[0].startswith("block1_conv1: representation error ")
    assert lines[1].startswith("fc1: representation error ")
    _read(tmp_path / "inv.png")


@pytest.mark.parametrize("args, message", [
    (["--layer", "block2_conv2", "--channels", "60-64"],
     "block2_conv2 filter index 64 is out of range (0-63)"),
    (["--class", "10"], "class index 10 is out of range (0-9)"),
    (["--layer", "fc1"], "a filter objective needs a spatial layer; 'fc1' (Dense)"),
    (["--class", "boots"], "unknown class 'boots'"),
    ([], "give --layer (with --channels) or --class"),
    (["--layer", "block2_conv2", "--channels", "5-2"], "'5-2' is a backwards range; write 2-5"),
])
def test_maximize_mistakes_get_one_line(args, message, tmp_path):
    result = run("maximize", "demo", *args, "--steps", "2", "--out", tmp_path / "m.png")
    assert result.exit_code != 0 and message in result.output
    assert isinstance(result.exception, SystemExit)


def test_deconv_from_a_layer_and_from_a_class(tmp_path, boot):
    result = run("deconv", "demo", boot, "--layer", "block2_conv2", "--count", "4",
                 "--out", tmp_path / "d.png")
    assert result.exit_code == 0, result.output
    _read(tmp_path / "d.png")
    result = run("deconv", "demo", boot, "--class", "ankle boot", "--guided", "--method",
                 "gradient", "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0_ankle_boot.png: guided from predictions: class ankle boot")


@pytest.mark.parametrize("args, message", [
    (["deconv", "demo", "{boot}", "--layer", "block2_conv2", "--channels", "3-1", "--out",
      "d.png"], "'3-1' is a backwards range; write 1-3"),
    (["invert", "demo", "{boot}", "--layers", "block1_conv1,block2_conv9", "--out", "i.png"],
     "Error: no layer 'block2_conv9' in model 'kvis_demo'; closest: block2_conv2"),
    (["features", "demo", "{boot}", "--all", "--out", "/proc/kvis_maps"],
     "Error: cannot write /proc/kvis_maps/overview.png"),
    (["deconv", "demo", "{boot}", "--layer", "block2_conv2", "--out", "/proc/d.png"],
     "Error: cannot write /proc/d.png"),
])
def test_synthesis_and_projection_mistakes_get_one_line(args, message, boot, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*[a.format(boot=boot) for a in args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.slow
def test_attention_on_one_image_and_on_a_folder(tmp_path, boot):
    result = run("attention", "demo", boot, "--method", "grad-cam++", "--score", "probability",
                 "--out", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0_ankle_boot.png: ankle boot (probability ")
    assert "grad-cam++ at block3_conv1" in result.output
    _read(tmp_path / "a.png")
    result = run("attention", "demo", boot.parent, "--batch", "--method", "saliency",
                 "--class", "bag", "--out", tmp_path / "cams")
    assert result.exit_code == 0, result.output
    assert "0_ankle_boot.png: bag (logit " in result.output
    figures = sorted((tmp_path / "cams").glob("*_bag_saliency.png"))
    assert len(figures) == 10 and figures[0].name == "0_ankle_boot_bag_saliency.png"
    assert _read(figures[0]).shape[0] > 100  # a titled figure, not a 28 px overlay


def test_attention_batch_skips_counts_and_lists_unreadable_files(tmp_path, boot, capfd):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes(boot.read_bytes())
    (folder / "b.bmp").write_bytes(b"BM" + bytes(60))  # OpenCV would log "[ERROR:0@...]"
    (folder / "c.png").write_bytes(boot.read_bytes())
    (folder / "d.png").write_text("a text file named .png")
    result = run("attention", "demo", folder, "--batch", "--method", "saliency",
                 "--class", "bag,trouser,coat,sneaker", "--out", tmp_path / "cams")
    assert result.exit_code == 0, result.output
    assert "warning: skipped 2 of 4 images that could not be read: b.bmp (cannot read image " \
        in result.output and "; d.png (cannot read image " in result.output
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == [
        "a_bag_saliency.png", "c_coat_saliency.png"]  # each kept image keeps its own class
    assert "[ERROR" not in capfd.readouterr().err


def test_sanity_prints_one_row_per_method(tmp_path, boot):
    result = run("sanity", "demo", boot, "--methods", "saliency,grad-cam", "--score",
                 "probability", "--layers", "fc1,block1_conv1", "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # progress goes to stderr
    assert "(ankle boot, probability)" in lines[0]
    assert lines[1].split() == ["randomized", "down", "to", "saliency", "grad-cam"]
    rows = [line.split() for line in lines[2:] if line.startswith("  ")]
    assert [row[0] for row in rows] == ["fc1", "block1_conv1"]  # --layers, output first
    assert all(len(row) == 3 and -1 <= float(row[1]) <= 1 for row in rows)


@pytest.mark.parametrize("args, message", [
    (["deconv", "demo", "{boot}", "--layer", "fc1"], "project from a class instead"),
    (["deconv", "demo", "{boot}"], "give --layer or --class"),
    (["attention", "demo", "{boot}", "--class", "shoe"], "unknown class 'shoe'"),
    (["attention", "demo", "{boot}", "--batch"], "is not a folder"),
    (["sanity", "demo", "{boot}", "--methods", "lime"],
     "unknown attention method 'lime'; choose from grad-cam, grad-cam++"),
    (["attention", "demo", "{boot}", "--method", "gradcam"],
     "unknown attention method 'gradcam'; closest: grad-cam"),
    (["attention", "demo", "{boot}", "--method", "saliency", "--layer", "fc1"],
     "saliency attributes to the input pixels and takes no layer"),
    (["attention", "demo", "{boot}", "--class", "12"], "class index 12 is out of range (0-9)"),
    (["attention", "demo", "{boot}", "--class", "-1"], "class index -1 is out of range (0-9)"),
])
def test_projection_and_attention_mistakes(args, message, boot, tmp_path):
    result = run(*[a.format(boot=boot) for a in args], "--out", tmp_path / "x.png")
    assert result.exit_code != 0 and message in result.output
    assert isinstance(result.exception, SystemExit)


def test_occlusion_maps_and_reports_the_drop(tmp_path, boot):
    result = run("occlusion", "demo", boot, "--size", "6", "--stride", "4",
                 "--out", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[0]
    assert line.startswith("unoccluded: block3_conv1 #") and "p(ankle boot) 1.0000" in line
    _read(tmp_path / "o.png")
    result = run("occlusion", "demo", boot, "--size", "6", "--stride", "4", "--score", "logit",
                 "--class", "sandal", "--fill", "0", "--out", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    assert "logit(sandal)" in result.stdout.splitlines()[0]
    result = run("occlusion", "demo", boot, "--size", "40", "--out", tmp_path / "o.png")
    assert result.exit_code == 1
    assert "occluder size 40 does not fit the 28x28 image" in result.output


@pytest.mark.parametrize("args, message", [
    (["occlusion", "demo", "{boot}", "--fill", "300"],
     "Invalid value for '--fill': 300.0 is not in the range 0<=x<=255."),
    (["occlusion", "demo", "{boot}", "--size", "-3"],
     "Invalid value for '--size': -3 is not in the range x>=1."),
    (["occlusion", "demo", "{boot}", "--stride", "0"],
     "Invalid value for '--stride': 0 is not in the range x>=1."),
    (["occlusion", "demo", "missing.png"],
     "Invalid value for 'IMAGE': File 'missing.png' does not exist."),
    (["occlusion", "demo", "{boot}", "--size", "6", "--class", "boot"],
     "unknown class 'boot' for model"),
    (["occlusion", "demo", "{boot}", "--score", "softmax"], "Invalid value for '--score'"),
    (["invariance", "demo", "{boot}", "missing.png"], "File 'missing.png' does not exist."),
    (["invariance", "demo", "{boot}", "--layers", "block1_conv3"],
     "no layer 'block1_conv3' in model 'kvis_demo'; closest: block1_conv2, block1_conv1"),
    (["correspondence", "demo", "--images", "nowhere", "--boxes", "{boot}"],
     "Directory 'nowhere' does not exist."),
])
def test_analyses_mistakes_are_one_line(args, message, boot, tmp_path):
    result = run(*[a.format(boot=boot) for a in args], "--out", tmp_path / "x.png")
    assert result.exit_code != 0 and message in result.output, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_invariance_curves_through_the_cli(tmp_path, boot):
    result = run("invariance", "demo", boot, boot.parent / "0_bag.png", "--transform", "scale",
                 "--out", tmp_path / "i.png")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "scale values: 1 1.1 1.2 1.3 1.4 1.5 1.6 1.7 1.8"
    assert result.output.splitlines()[1].startswith("0_ankle_boot.png: probability of ankle "
                                                    "boot from ")
    _read(tmp_path / "i.png")
    result = run("invariance", "demo", boot, boot.parent / "0_bag.png", "--score", "logit",
                 "--class", "ankle boot,bag", "--out", tmp_path / "i.png")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2].startswith("0_bag.png: logit of bag from ")


def test_correspondence_table_through_the_cli(tmp_path, boot):
    boxes = {"0_ankle_boot.png": [0, 14, 8, 8], "0_sneaker.png": [0, 14, 8, 8],
             "0_sandal.png": [0, 14, 8, 8]}
    (tmp_path / "boxes.json").write_text(__import__("json").dumps(boxes))
    result = run("correspondence", "demo", "--images", boot.parent, "--boxes",
                 tmp_path / "boxes.json", "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:3]]
    assert [row[0] for row in rows] == ["block3_conv1", "fc1"] and "warning" not in result.output
    (tmp_path / "one.json").write_text('{"0_ankle_boot.png": [0, 14, 8, 8]}')
    result = run("correspondence", "demo", "--images", boot.parent, "--boxes",
                 tmp_path / "one.json", "--out", tmp_path / "c.png")
    assert result.exit_code == 1 and "at least two images" in result.output


@pytest.fixture(scope="module")
def concept_folder(tmp_path_factory):
    from test_dissection import COLOURS, colour_detector, colour_patches, write_concepts

    folder = tmp_path_factory.mktemp("dissect")
    images, masks = colour_patches(20)
    colour_detector().save(folder / "colours.keras")
    return write_concepts(folder / "concepts", images, masks, list(COLOURS))


def test_dissect_through_the_cli(concept_folder, tmp_path):
    model = concept_folder.parent / "colours.keras"
    result = run("dissect", model, concept_folder, "--preprocess", "unit", "--quantile", 0.05,
                 "--count", 3, "--out", tmp_path / "d.png", "--json", tmp_path / "d.json")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sorted(line.split()[2] for line in lines[:3]) == ["blue", "green", "red"]
    assert all(line.startswith("units #") and " IoU 0." in line for line in lines[:3])
    assert lines[3] == "3 of 4 units detect a concept (IoU > 0.04), 3 concepts covered"
    summary = __import__("json").loads((tmp_path / "d.json").read_text())
    assert [(u["channel"], u["concept"]) for u in summary["units"][:3]] == [
        (0, "red"), (1, "green"), (2, "blue")]
    assert f"{max(u['iou'] for u in summary['units']):.4f}" in lines[0]
    _read(tmp_path / "d.png")


@pytest.mark.parametrize("args, message", [
    (["{model}", "nowhere"], "Directory 'nowhere' does not exist."),
    (["{model}", "{folder}", "--quantile", "0"], "0<x<1"),
    (["{model}", "{folder}", "--layers", "colours,units,nothing"], "no layer 'nothing'"),
    (["{model}", "{folder}/images"], "has no concepts.txt"),
    (["{model}", "{folder}", "--json", "/proc/x.json"], "cannot write /proc/x.json"),
])
def test_dissect_mistakes_are_one_line(concept_folder, tmp_path, args, message):
    model = concept_folder.parent / "colours.keras"
    args = [a.format(model=model, folder=concept_folder) for a in args]
    result = run("dissect", *args, "--preprocess", "unit", "--out", tmp_path / "d.png")
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "d.png").exists()


@pytest.mark.slow
def test_topk_writes_the_index_and_a_figure_per_layer_and_resumes(tmp_path):
    import json

    out = tmp_path / "scan"
    result = run("topk", "demo", "demo", "--layers", "block2_conv2,block3_conv1", "--keep", 4,
                 "--count", 6, "--out", out)
    assert result.exit_code == 0, result.output
    assert "scanned 400 images (0 skipped)" in result.output
    index = json.loads((out / "index.json").read_text())
    assert index["images"] == 400 and set(index["layers"]) == {"block2_conv2", "block3_conv1"}
    values = np.array(index["layers"]["block3_conv1"]["values"])
    assert values.shape == (128, 4) and np.all(np.diff(values, axis=1) <= 0)
    _read(out / "top4_block2_conv2.png")
    again = run("topk", "demo", "demo", "--layers", "block2_conv2,block3_conv1", "--keep", 4,
                "--count", 6, "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    assert json.loads((out / "index.json").read_text())["layers"] == index["layers"]


def test_topk_without_statistics_writes_an_index_kvis_stats_will_not_resume(tmp_path):
    import json

    out = tmp_path / "scan"
    result = run("topk", "demo", "demo", "--layers", "block3_conv1", "--keep", 2, "--count", 2,
                 "--no-statistics", "--out", out)
    assert result.exit_code == 0, result.output
    layer = json.loads((out / "index.json").read_text())["layers"]["block3_conv1"]
    assert np.array(layer["values"]).shape == (128, 2) and "total" not in layer
    refused = run("stats", "demo", "demo", "--layers", "block3_conv1", "--keep", 2,
                  "--out", out, "--resume")
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "statistics: checkpoint False, this run True" in refused.output, refused.output


def test_stats_lists_dead_and_rare_channels_and_the_first_layer_spectrum(tmp_path):
    result = run("stats", "demo", "demo", "--layers", "block1_conv1,block3_conv1",
                 "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "block3_conv1 (128 channels): " in result.output and " dead" in result.output
    assert "block1_conv1: spectral energy low" in result.output
    _read(tmp_path / "statistics.png")


@pytest.mark.parametrize("args, message", [
    (["topk", "demo", "nowhere/", "--out", "o"], "dataset not found: nowhere/"),
    (["topk", "demo", "demo", "--keep", "0", "--out", "o"], "0 is not in the range x>=1"),
    (["topk", "demo", "demo", "--layers", "fc1", "--out", "o"],
     "the dataset scan needs a spatial layer; 'fc1'"),
    (["topk", "demo", "{empty}", "--out", "o"], "is empty"),
    (["stats", "demo", "{texts}", "--out", "o"], "no image files"),
])
def test_scan_mistakes_get_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("not an image")
    result = run(*[a.format(empty=tmp_path / "empty", texts=tmp_path / "texts") for a in args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_attention_explains_a_channel_or_a_neuron_given_as_a_target(tmp_path):
    from kvis.core.demo import demo_images

    images, _ = demo_images()
    path = tmp_path / "boot.png"
    cv2.imwrite(str(path), images[0])
    runner = CliRunner()
    out = tmp_path / "ch.png"
    result = runner.invoke(main, ["attention", "demo", str(path), "--method", "saliency",
                                  "--target", "block3_conv1:5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "channel(block3_conv1, 5) = " in result.output and out.exists()
    result = runner.invoke(main, ["attention", "demo", str(path), "--target", "block3_conv1",
                                  "--out", str(out)])
    assert result.exit_code != 0 and "write LAYER:CHANNEL" in result.output
    result = runner.invoke(main, ["attention", "demo", str(path), "--target",
                                  "block3_conv1:5@2,2", "--class", "3", "--out", str(out)])
    assert result.exit_code != 0 and "give classes or a target, not both" in result.output


@pytest.mark.parametrize("rate", ["0", "-1"])
def test_maximize_refuses_a_learning_rate_that_would_not_climb(tmp_path, rate):
    result = CliRunner().invoke(main, ["maximize", "demo", "--layer", "block2_conv2", "--lr",
                                       rate, "--out", str(tmp_path / "m.png")])
    assert result.exit_code != 0 and "--lr" in result.output
    assert not (tmp_path / "m.png").exists()


def test_a_folder_given_as_the_image_suggests_batch(tmp_path):
    (tmp_path / "photos").mkdir()
    result = CliRunner().invoke(main, ["attention", "demo", str(tmp_path / "photos"), "--out",
                                       str(tmp_path / "cam.png")])
    assert result.exit_code != 0 and "is a folder: pass --batch" in result.output


def _saved(path):
    """The arrays of a --save-maps file and its parameters, read without pickle."""
    import json

    data = dict(np.load(path, allow_pickle=False))
    return data, json.loads(str(data.pop("params")))


def test_attention_saves_the_maps_of_several_methods_as_the_api_computes_them(tmp_path, boot,
                                                                              demo):
    import kvis

    result = run("attention", "demo", boot, "-m", "grad-cam,saliency", "--class", "bag",
                 "--layer", "block2_conv2", "--sign", "all", "--save-maps", tmp_path / "m.npz",
                 "--out", tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        line.format(result.output.split("(logit ")[1].split(")")[0]) for line in
        ["0_ankle_boot.png: bag (logit {}): grad-cam at block2_conv2",
         "0_ankle_boot.png: bag (logit {}): saliency"]]
    assert result.output.endswith(f"wrote {tmp_path / 'm.npz'}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.png"]  # no temporaries
    data, params = _saved(tmp_path / "m.npz")
    image = kvis.load_image(boot, demo)
    cam = kvis.attention(demo, image, "grad-cam", classes="bag", layer="block2_conv2",
                         progress=False)
    saliency = kvis.attention(demo, image, "saliency", classes="bag", progress=False)
    np.testing.assert_allclose(data["grad-cam/maps"], cam.maps, atol=1e-6)
    np.testing.assert_allclose(data["grad-cam/raw"], cam.raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["saliency/maps"], saliency.maps, atol=1e-6)
    np.testing.assert_allclose(data["saliency/values"], saliency.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(data["scores"], cam.scores, rtol=1e-6)
    np.testing.assert_array_equal(data["pixels"], image.pixels[None])
    assert data["classes"].tolist() == [8] and data["class_labels"].tolist() == ["bag"]
    assert data["names"].tolist() == ["0_ankle_boot.png"] and "saliency/raw" not in data
    assert params["command"] == "attention" and params["model"] == "demo"
    assert params["methods"] == ["grad-cam", "saliency"] and params["sign"] == "all"
    assert params["grad-cam/layer"] == "block2_conv2" and params["score"] == "logit"
    assert params["classes"] == "bag"


def test_one_method_saves_unprefixed_arrays_for_every_image_of_a_batch(tmp_path, boot, demo):
    import kvis

    result = run("attention", "demo", boot.parent, "--batch", "-m", "grad-cam", "--save-maps",
                 tmp_path / "cams.npz", "--out", tmp_path / "cams")
    assert result.exit_code == 0, result.output
    data, params = _saved(tmp_path / "cams.npz")
    images = [kvis.load_image(path, demo) for path in sorted(boot.parent.glob("*.png"))]
    expected = kvis.attention(demo, images, "grad-cam", progress=False)
    assert data["maps"].shape == (10, 28, 28) and data["raw"].shape == (10, 7, 7)
    np.testing.assert_allclose(data["maps"], expected.maps, atol=1e-6)
    np.testing.assert_array_equal(data["classes"], expected.classes)
    assert data["names"].tolist() == expected.names
    assert params["method"] == "grad-cam" and params["layer"] == "block3_conv1"


def test_the_technique_commands_save_what_they_computed(tmp_path, boot, demo):
    import kvis

    image = kvis.load_image(boot, demo)
    commands = {
        "filters": ["filters", "demo", "--layer", "block1_conv1"],
        "features": ["features", "demo", boot, "--layer", "block2_conv1"],
        "occlusion": ["occlusion", "demo", boot, "--size", "6", "--stride", "4"],
        "deconv": ["deconv", "demo", boot, "--layer", "block2_conv2", "--count", "2"],
        "invert": ["invert", "demo", boot, "--layers", "block1_conv1", "--steps", "4"],
    }
    saved = {}
    for name, args in commands.items():
        result = run(*args, "--save-maps", tmp_path / f"{name}.npz",
                     "--out", tmp_path / f"{name}.png")
        assert result.exit_code == 0, result.output
        saved[name] = _saved(tmp_path / f"{name}.npz")
        assert saved[name][1]["command"] == name
    np.testing.assert_array_equal(saved["filters"][0]["kernel"],
                                  kvis.conv_filters(demo, "block1_conv1").kernel)
    np.testing.assert_allclose(
        saved["features"][0]["maps/block2_conv1"],
        kvis.feature_maps(demo, image, ["block2_conv1"], progress=False)["block2_conv1"],
        rtol=1e-5, atol=1e-6)
    occluded = kvis.occlusion(demo, image, size=6, stride=4, progress=False)
    data, params = saved["occlusion"]
    np.testing.assert_allclose(data["sensitivity"], occluded.sensitivity, atol=1e-6)
    assert params["class_label"] == "ankle boot" and params["channel"] == occluded.channel
    projected = kvis.deconvnet(demo, image, "block2_conv2", count=2)
    np.testing.assert_allclose(saved["deconv"][0]["signals"], projected.signals, atol=1e-6)
    assert saved["deconv"][0]["units"].tolist() == projected.units
    data, params = saved["invert"]
    assert data["images"].shape == (1, 28, 28, 1) and params["steps"] == 4
    assert data["layers"].tolist() == ["block1_conv1"]


def test_save_maps_must_be_an_npz_and_is_checked_before_any_work(tmp_path, boot):
    result = run("occlusion", "demo", boot, "--save-maps", tmp_path / "maps.json",
                 "--out", tmp_path / "o.png")
    assert result.exit_code == 2 and "maps.json: the data file ends in .npz" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("methods, message", [
    ("grad-cam,salincy", "unknown attention method 'salincy'; closest: saliency"),
    ("grad-cam,lime", "unknown attention method 'lime'; choose from grad-cam, grad-cam++"),
    ("saliency,saliency", "give attention methods separated by commas, each once"),
])
def test_a_bad_method_in_a_list_is_named(methods, message, boot, tmp_path):
    result = run("attention", "demo", boot, "-m", methods, "--out", tmp_path / "m.png")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert message in result.output.strip().splitlines()[-1], result.output  # the Error: line


def test_sign_draws_the_chosen_sign(tmp_path, boot, monkeypatch):
    import kvis.attribution.attention as module

    figures, draw = [], module.plot_attention
    monkeypatch.setattr(module, "plot_attention",
                        lambda result, **options: figures.append(draw(result, **options))
                        or figures[-1])
    result = run("attention", "demo", boot, "-m", "saliency", "--sign", "negative",
                 "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    labels = [ax.get_ylabel() for ax in figures[0].axes if ax.get_label() == "<colorbar>"]
    assert labels == ["saliency map, negative part"]


def test_tensorflow_start_up_lines_stay_hidden_unless_verbose(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    kvis = Path(sys.executable).with_name("kvis")  # the console script of this install
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",  # the usual way to silence TensorFlow
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    for flags in ([], ["--verbose"]):
        result = subprocess.run([kvis, *flags, "layers", "demo"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "block3_pool" in result.stdout, result.stderr
        if not flags:
            assert result.stderr == ""
