"""Draw the README's dataset-scan figures: the demo model over the 10,000 Fashion-MNIST test
images (Zeiler & Fergus Fig. 2 for two layers, and the activity statistics).

Needs the Debian package `dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist).

Usage: python scripts/make_scan_figures.py [--data DIR] [--out docs/figures]
"""

import argparse
from pathlib import Path

import kvis
from kvis.core.io import save_figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()

    model = kvis.load_model("demo")
    data = args.data / "t10k-images-idx3-ubyte.gz"
    found = kvis.scan(model, data, ["block2_conv2", "block3_conv1"], count=9)
    for layer in found.layers:
        examples = kvis.top_examples(model, found, data, layer=layer, count=8)
        save_figure(kvis.plot_top_examples(
            examples, title=f"demo {layer}: the 9 strongest activations of 8 feature maps over "
                            "the Fashion-MNIST test set (projections | patches)"),
                    args.out / f"top9_{layer}.png")
    save_figure(kvis.plot_statistics(found), args.out / "scan_statistics.png")
    print(kvis.filter_spectrum(model).summary())
    for layer in found.layers:
        stats = found.stats[layer]
        print(f"{layer}: {len(stats.dead)} dead, {len(stats.rare)} rare of {len(stats.active)}")


if __name__ == "__main__":
    main()
