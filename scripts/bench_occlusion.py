"""Occlusion on VGG16 and ResNet50 (random weights, 224 px): full recomputation against
incremental inference, exact and approximate (Krypton's projective-field threshold and adaptive
drill-down), as a Markdown table: seconds per call (median of the repeats, after a warm-up),
the speedup over the full recomputation, and the approximations' error (max and mean absolute
difference of the sensitivity map, relative to the exact map's range).

    python scripts/bench_occlusion.py                    # VGG16 and ResNet50, both occluders
    python scripts/bench_occlusion.py --models vgg16 --repeats 1
    python scripts/bench_occlusion.py --models demo --occluders 4/1,6/2   # trained, 28 px

The CPU count and load come first: on a shared machine, say so beside the numbers.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kvis  # noqa: E402
from kvis.attribution.occlusion import measured_error  # noqa: E402

SETTINGS = (("full", dict(incremental=False)), ("incremental", dict(incremental=True)),
            ("threshold 0.6", dict(incremental=True, threshold=0.6)),
            ("threshold 0.4", dict(incremental=True, threshold=0.4)),
            ("drill-down 0.25", dict(incremental=True, drill_down=0.25)),
            ("threshold 0.4 + drill-down 0.25",
             dict(incremental=True, threshold=0.4, drill_down=0.25)))
OCCLUDERS = ((16, 8), (32, 16))


def timed(call, repeats):
    """`(median seconds, result)` of `repeats` calls after one warm-up call."""
    result = call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def rows(model, image, repeats, settings, occluders):
    """One table row per occluder and setting."""
    for size, stride in occluders:
        full = None
        for name, options in settings:
            options = dict(size=size, stride=stride, progress=False, **options)
            seconds, result = timed(lambda options=options: kvis.occlusion(
                model, image, **options), repeats)
            full = full or (seconds, result)
            error = measured_error(result.sensitivity, full[1].sensitivity)
            yield (f"{model.name} | {size} px / {stride} ({result.scores.size} positions) | "
                   f"{name} | {seconds:.2f} | {full[0] / seconds:.1f}x | "
                   f"{error[0]:.2g} / {error[1]:.2g} | {result.fallback or '-'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg16,resnet50", help="vgg16, resnet50, demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--settings", default=",".join(name for name, _ in SETTINGS))
    parser.add_argument("--occluders", default="16/8,32/16", help="size/stride,...")
    args = parser.parse_args()
    settings = [s for s in SETTINGS if s[0] in args.settings.split(",")]
    occluders = [tuple(int(v) for v in o.split("/")) for o in args.occluders.split(",")]
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; keras {keras.version()}")
    print("| model | occluder | inference | s / call | speedup | error max / mean | fallback |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, image = subject(name, args.size)
        for row in rows(model, image, args.repeats, settings, occluders):
            print(f"| {row} |", flush=True)


def subject(name, size):
    """The model and its image: the trained demo model and a real ankle boot, or a random-weight
    keras.applications model at `size` px and an image of uniform noise."""
    if name == "demo":
        images, labels = kvis.demo_images()
        model = kvis.load_model("demo")
        return model, kvis.load_image(images[np.flatnonzero(labels == 9)[0]], model)
    keras.utils.set_random_seed(0)
    builder = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}
    model = builder[name](weights=None, input_shape=(size, size, 3))
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    return model, kvis.preprocessing_for(model)(image)


if __name__ == "__main__":
    main()
