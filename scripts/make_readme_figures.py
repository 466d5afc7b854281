"""Draw the README's figures from the demo model that ships with kvis.

Usage: python scripts/make_readme_figures.py [--out docs/figures]
"""

import argparse
from pathlib import Path

import numpy as np

import kvis


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()

    model = kvis.load_model("demo")
    images, labels = kvis.demo_images()
    boot = kvis.load_image(images[np.flatnonzero(labels == 9)[0]], model)
    figures = {
        "filters_block1_conv1.png": kvis.plot_filters(kvis.conv_filters(model, "block1_conv1"),
                                                      title="demo block1_conv1 filters"),
        "filters_block2_conv1.png": kvis.plot_filters(kvis.conv_filters(model, "block2_conv1"),
                                                      title="demo block2_conv1 filters"),
    }
    maps = kvis.feature_maps(model, boot, progress=False)
    figures["features_block2_conv1.png"] = kvis.plot_feature_maps(
        maps, layer="block2_conv1", count=16, title="ankle boot at block2_conv1, strongest maps")
    figures["features_summary_block2_conv2.png"] = kvis.plot_layer_summary(
        maps, layer="block2_conv2", title="ankle boot at block2_conv2")
    figures["features_overview.png"] = kvis.plot_feature_overview(maps)
    filters = kvis.maximize_filters(model, "block2_conv2", range(32), progress=False)
    figures["maximize_block2_conv2.png"] = kvis.plot_synthesis(
        filters, cols=8, title="demo block2_conv2: images that most excite filters 0-31")
    inversion = kvis.invert(model, boot, ["block1_conv1", "block1_conv2", "block2_conv2",
                                          "block3_conv1", "block3_pool", "fc1"], progress=False)
    figures["invert_boot.png"] = kvis.plot_inversion(
        inversion, title="an ankle boot reconstructed from each layer of the demo model")
    projection = kvis.deconvnet(model, boot, "block2_conv2", count=6, progress=False)
    figures["deconvnet_block2_conv2.png"] = kvis.plot_projections(
        projection, title="deconvnet: the 6 strongest block2_conv2 maps of an ankle boot")
    picks = np.array([np.flatnonzero(labels == c)[0] for c in (9, 8, 1, 5, 0, 7)])
    x = kvis.preprocessing_for(model)(images[picks])
    figures["gradcam_demo.png"] = kvis.plot_attention(
        kvis.attention(model, x, "grad-cam", progress=False),
        title="grad-cam at block3_conv1 (the top prediction of each image)")
    check = kvis.cascading_randomization(
        model, x[:3], ["saliency", "guided-backprop", "grad-cam", "integrated-gradients"],
        progress=False)
    figures["sanity_demo.png"] = kvis.plot_sanity_check(check)
    occluded = kvis.occlusion(model, boot, size=6, stride=2, progress=False)
    figures["occlusion_boot.png"] = kvis.plot_occlusion(
        occluded, title="occlusion sensitivity of an ankle boot (6 px square, stride 2)")
    for name, figure in figures.items():
        kvis.save_figure(figure, args.out / name, dpi=90)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
