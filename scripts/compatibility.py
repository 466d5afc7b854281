"""The compatibility matrix: every technique of kvis on every architecture of `keras.applications`
(and two keras-hub image classifiers), random weights, small inputs. Writes the README's table.

A cell passes when the technique runs without error and returns finite numbers of the shape it
promises. tests/test_compatibility.py runs the same cells and checks that the README shows this
script's table.

Usage: python scripts/compatibility.py [--only NAME,...] [--record docs/compatibility.json]
       [--readme README.md] [--no-run]

--record keeps each cell's result (None, or why it failed) per architecture, merged into what
the file already holds, so rows can be run a few at a time; --readme redraws the table from it
(with --no-run, without running any row).
"""

import argparse
import json
import re
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import keras
import numpy as np
from click.testing import CliRunner

import kvis
from kvis.cli import main as main_command
from kvis.core.anatomy import last_conv_layer
from kvis.core.graph import model_graph
from kvis.core.vocabulary import ATTENTION_METHODS
from kvis.synthesis.render import default_settings

CLASSES = 5
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_APPS = keras.applications


def _application(build, size):
    return lambda: build(weights=None, input_shape=(size, size, 3), classes=CLASSES)


def _keras_hub(backbone, family):
    """A keras-hub image classifier with its preprocessor, as `from_preset` builds it: the
    ImageNet normalization of keras-hub's presets in its image converter."""
    def build():
        import keras_hub

        converter = getattr(keras_hub.layers, f"{family}ImageConverter")(
            image_size=(32, 32), scale=[1 / (255 * s) for s in IMAGENET_STD],
            offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
        preprocessor = getattr(keras_hub.models, f"{family}ImageClassifierPreprocessor")(
            image_converter=converter)
        classifier = getattr(keras_hub.models, f"{family}ImageClassifier")
        return classifier(backbone=backbone(keras_hub), num_classes=CLASSES,
                          preprocessor=preprocessor)
    return build


def _hub_resnet(keras_hub):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3))


def _hub_efficientnet(keras_hub):
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[32, 16],
        stackwise_output_filters=[16, 24], stackwise_expansion_ratios=[1, 6],
        stackwise_strides=[1, 2], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_block_types=["v1", "v1"], input_shape=(32, 32, 3))


# Rows: a name and a builder; the smallest input each architecture takes.
ARCHITECTURES = {
    "VGG16": _application(_APPS.VGG16, 32),
    "VGG19": _application(_APPS.VGG19, 32),
    "ResNet50": _application(_APPS.ResNet50, 32),
    "ResNet101": _application(_APPS.ResNet101, 32),
    "ResNet152": _application(_APPS.ResNet152, 32),
    "ResNet50V2": _application(_APPS.ResNet50V2, 32),
    "ResNet101V2": _application(_APPS.ResNet101V2, 32),
    "ResNet152V2": _application(_APPS.ResNet152V2, 32),
    "InceptionV3": _application(_APPS.InceptionV3, 75),
    "InceptionResNetV2": _application(_APPS.InceptionResNetV2, 75),
    "Xception": _application(_APPS.Xception, 71),
    "MobileNet": _application(_APPS.MobileNet, 32),
    "MobileNetV2": _application(_APPS.MobileNetV2, 32),
    "MobileNetV3Small": _application(_APPS.MobileNetV3Small, 32),
    "MobileNetV3Large": _application(_APPS.MobileNetV3Large, 32),
    "DenseNet121": _application(_APPS.DenseNet121, 32),
    "NASNetMobile": _application(_APPS.NASNetMobile, 32),
    "EfficientNetB0": _application(_APPS.EfficientNetB0, 32),
    "EfficientNetV2B0": _application(_APPS.EfficientNetV2B0, 32),
    "ConvNeXtTiny": _application(_APPS.ConvNeXtTiny, 32),
    "keras-hub ResNet": _keras_hub(_hub_resnet, "ResNet"),
    "keras-hub EfficientNet": _keras_hub(_hub_efficientnet, "EfficientNet"),
}


def _finite(*arrays):
    for array in arrays:
        array = np.asarray(array)
        assert array.size and np.isfinite(array).all(), "empty or not finite"


def _layer_table(model, image, folder):
    table = kvis.layer_table(model)
    fields = kvis.receptive_fields(model)
    assert len(table) and fields, "no layers"


def _feature_maps(model, image, folder):
    maps = kvis.feature_maps(model, image, progress=False)
    _finite(*maps.maps.values())


def _filters(model, image, folder):
    _finite(kvis.conv_filters(model, _convs(model)[0]).kernel)


def _attention(method):
    def run(model, image, folder):
        result = kvis.attention(model, image, method, progress=False, **_quick(method))
        _finite(result.maps)
    return run


def _deconvnet(method):
    def run(model, image, folder):
        result = kvis.deconvnet(model, image, last_conv_layer(model), method=method, count=2,
                                progress=False)
        _finite(result.signals)
    return run


def _occlusion(model, image, folder):
    size = model.input_shape[1]
    _finite(kvis.occlusion(model, image, size=size // 4, stride=size // 4,
                           progress=False).sensitivity)


def _maximization(model, image, folder):
    settings = default_settings(model, steps=4)
    result = kvis.maximize_filters(model, last_conv_layer(model), [0, 1], settings=settings,
                                   progress=False)
    _finite(result.images, result.scores)


def _inversion(model, image, folder):
    settings = default_settings(model, steps=4)
    _finite(kvis.invert(model, image, [last_conv_layer(model)], settings=settings,
                        progress=False).pixels)


def _top_examples(model, image, folder):
    pixels = np.random.default_rng(0).integers(0, 256, (6, *model.input_shape[1:]), np.uint8)
    layer = last_conv_layer(model)
    found = kvis.scan(model, pixels, [layer], count=3, progress=False)
    examples = kvis.top_examples(model, found, pixels, layer=layer, count=2, progress=False)
    _finite(examples.values, examples.projections)


def _sanity(model, image, folder):
    result = kvis.cascading_randomization(model, image, ["saliency", "grad-cam"],
                                          layers=[_convs(model)[-1]], progress=False)
    assert np.isfinite(result.correlations).any(), "no correlation"


def _report(model, image, folder):
    report = kvis.build_report(model, image, fast=True, progress=False,
                               sections=["prediction", "model", "features", "attention"])
    assert not report.left_out, report.left_out


def _cli_round_trip(model, image, folder):
    path, picture = Path(folder) / "model.keras", Path(folder) / "image.png"
    model.save(path)
    cv2.imwrite(str(picture), image.pixels[..., ::-1])
    done = CliRunner().invoke(main_command, [
        "attention", str(path), str(picture), "--preprocess", _preprocess_name(model),
        "--out", str(Path(folder) / "cam.png")])
    assert done.exit_code == 0, done.output.strip().splitlines()[-1:]


# Columns: a technique name and what one cell runs.
TECHNIQUES = {
    "layer table": _layer_table,
    "feature maps": _feature_maps,
    "filters": _filters,
    **{method: _attention(method) for method in ATTENTION_METHODS if method != "occlusion"},
    "deconvnet": _deconvnet("explicit"),
    "gradient deconvnet": _deconvnet("gradient"),
    "occlusion": _occlusion,
    "maximization": _maximization,
    "inversion": _inversion,
    "scan + top-9": _top_examples,
    "sanity check": _sanity,
    "report": _report,
    "CLI .keras": _cli_round_trip,
}


def _quick(method):
    return {"smoothgrad": {"samples": 4}, "integrated-gradients": {"steps": 4}}.get(method, {})


def _convs(model):
    return [path for path, node in model_graph(model).nodes.items()
            if isinstance(node.layer, keras.layers.Conv2D)]


def _preprocess_name(model):
    return kvis.preprocessing_for(model).name


def run_row(name, techniques=TECHNIQUES):
    """One architecture's cells: `{technique: (None if it passed, else the one-line reason,
    seconds)}`."""
    model = ARCHITECTURES[name]()
    pixels = np.random.default_rng(1).integers(0, 256, model.input_shape[1:], np.uint8)
    image = kvis.load_image(pixels, model)
    cells = {}
    with tempfile.TemporaryDirectory() as folder:
        for technique, run in techniques.items():
            began, reason = time.monotonic(), None
            try:
                run(model, image, folder)
            except Exception as error:  # a cell records why it failed, the matrix goes on
                reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"[:200]
                if not isinstance(error, (AssertionError, kvis.KvisError)):
                    traceback.print_exc()
            cells[technique] = (reason, time.monotonic() - began)
    keras.backend.clear_session()
    return cells


def markdown(rows):
    """The README's table: a row per architecture, a column per technique, ✓ or ✗."""
    techniques = list(next(iter(rows.values())))
    lines = ["| architecture | " + " | ".join(techniques) + " |",
             "|---|" + "---|" * len(techniques)]
    for name, cells in rows.items():
        lines.append(f"| {name} | " + " | ".join("✓" if cells[t][0] is None else "✗"
                                                 for t in techniques) + " |")
    return "\n".join(lines)


def replace_table(readme, table):
    """`readme`'s text with the table between the compatibility markers replaced."""
    text = Path(readme).read_text(encoding="utf-8")
    pattern = r"(<!-- compatibility:start -->\n).*?(<!-- compatibility:end -->)"
    if not re.search(pattern, text, flags=re.S):
        raise SystemExit(f"{readme} has no <!-- compatibility:start/end --> markers")
    return re.sub(pattern, lambda m: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated architectures (default: all)")
    parser.add_argument("--record", type=Path, help="keep the results in this JSON file")
    parser.add_argument("--readme", type=Path, help="draw the recorded table into this README")
    parser.add_argument("--no-run", action="store_true",
                        help="run no architecture: only redraw the table from --record")
    args = parser.parse_args()
    names = [] if args.no_run else args.only.split(",") if args.only else list(ARCHITECTURES)
    rows = {}
    for name in names:
        began = time.monotonic()
        rows[name] = run_row(name)
        failed = {t: why for t, (why, _) in rows[name].items() if why}
        print(f"{name}: {len(rows[name]) - len(failed)}/{len(rows[name])} in "
              f"{time.monotonic() - began:.0f} s; slowest: " + ", ".join(
                  f"{t} {s:.1f} s" for t, (_, s) in sorted(
                      rows[name].items(), key=lambda item: -item[1][1])[:5]), flush=True)
        for technique, why in failed.items():
            print(f"  {technique}: {why}", flush=True)
        if args.record:
            _record(args.record, name, rows[name])
    if args.readme:
        recorded = json.loads(args.record.read_text(encoding="utf-8"))
        table = markdown({name: {t: (why, 0) for t, why in recorded[name].items()}
                          for name in ARCHITECTURES if name in recorded})
        Path(args.readme).write_text(replace_table(args.readme, table), encoding="utf-8")


def _record(path, name, cells):
    """Add one row to the JSON record, rows kept in the order of `ARCHITECTURES`."""
    recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    recorded[name] = {technique: why for technique, (why, _) in cells.items()}
    ordered = {n: recorded[n] for n in ARCHITECTURES if n in recorded}
    path.write_text(json.dumps(ordered, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
