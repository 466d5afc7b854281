"""Every figure keeps its text inside itself and fits the report's column.

Each `plot_*` of `kvis.__all__` is drawn on a real small result of the demo model, once as
computed and once with the long names a real model gives (nested layer paths, long class and
file names), and every visible piece of text must lie inside the figure.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import kvis
from kvis.core.demo import build_demo_model
from kvis.dataset.dissection import Dissection
from kvis.plot.figures import SMALLEST_FONT, WIDEST
from kvis.synthesis.render import default_settings
from kvis.training.evolution import Evolution

CLASS = "Staffordshire bullterrier, Staffordshire bull terrier"
NAME = "IMG_20240517_143212_a_long_file_name_from_a_phone.jpg"
LAYERS = {layer.name for layer in build_demo_model().layers}


def long_path(layer):
    """A demo layer's name as deep as a nested model's path."""
    return f"resnet50/conv5_{layer}_out"


@pytest.fixture(scope="module")
def results(demo):
    """`{plot name: result}`: a real small result of each `plot_*` on the demo model."""
    pixels, _ = kvis.demo_images()
    image = kvis.load_image(pixels[0], demo)
    settings = default_settings(demo, steps=4)
    found = kvis.scan(demo, pixels[:16], progress=False)
    maps = kvis.feature_maps(demo, image, progress=False)
    return {
        "plot_attention": kvis.attention(demo, image, "grad-cam", progress=False),
        "plot_occlusion": kvis.occlusion(demo, image, size=7, stride=7, progress=False),
        "plot_filters": kvis.conv_filters(demo, "block1_conv1"),
        "plot_feature_maps": kvis.feature_maps(demo, image, "block3_conv1", progress=False),
        "plot_layer_summary": kvis.feature_maps(demo, image, "block3_conv1", progress=False),
        "plot_feature_overview": maps,
        "plot_synthesis": kvis.maximize_classes(demo, [0, 9], settings=settings,
                                                progress=False),
        "plot_inversion": kvis.invert(demo, image, ["block1_conv1", "block3_conv1"],
                                      settings=settings, progress=False),
        "plot_projections": kvis.deconvnet(demo, image, "block3_conv1", count=3,
                                           progress=False),
        "plot_sanity_check": kvis.cascading_randomization(demo, image, ["saliency"],
                                                          progress=False),
        "plot_invariance": kvis.invariance(demo, pixels[:2], transform="rotate",
                                           progress=False),
        "plot_correspondence": kvis.correspondence(demo, pixels[:3],
                                                   np.array([[4, 4, 12, 12]] * 3), trials=2,
                                                   progress=False),
        "plot_top_examples": kvis.top_examples(demo, found, pixels[:16], layer="block3_conv1",
                                               count=3, progress=False),
        "plot_statistics": found,
        "plot_dissection": _dissection(),
        "plot_evolution": _evolution(maps),
    }


def _dissection():
    """Two layers' units matched to three concepts, as `kvis.dissect` returns them."""
    iou = np.float32([[0.3, 0.01, 0.0], [0.0, 0.2, 0.05], [0.0, 0.0, 0.0], [0.01, 0.0, 0.1]])
    best = np.array([0, 1, -1, 2])
    concepts = ("red", "green", "blue")
    return Dissection(("block2_conv1", "block3_conv1"), np.array([0, 0, 1, 1]),
                      np.array([3, 5, 0, 7]), np.ones(4, np.float32), iou, iou + 1, iou, best,
                      iou.max(axis=1), tuple(concepts[b] if b >= 0 else None for b in best),
                      concepts, np.ones(3), 0.005, 60, "demo")


def _evolution(maps):
    """Two feature maps of two layers over three epochs, their tiles cut from real maps."""
    layers = ("block1_conv1", "block3_conv1")
    tiles = {path: np.stack([maps[path][0, :5, :5, :2].transpose(2, 0, 1)[..., None]] * 3)
             for path in layers}
    return Evolution(layers, {path: np.array([0, 1]) for path in layers}, np.array([1, 2, 5]),
                     {path: np.ones((3, 2), np.float32) for path in layers},
                     {path: np.zeros((3, 2), np.int64) for path in layers},
                     {path: np.zeros((3, 2, 2), np.int32) for path in layers},
                     {path: np.clip(t, 0, 1) for path, t in tiles.items()},
                     {path: np.uint8(np.clip(t, 0, 1) * 255) for path, t in tiles.items()})


def renamed(value):
    """`value` with every demo layer name made a long nested path, image names and class
    names made long, recursively through results, dicts, lists and tuples."""
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{
            f.name: _renamed_field(f.name, getattr(value, f.name))
            for f in dataclasses.fields(value) if f.init})
    if isinstance(value, str):
        return long_path(value) if value in LAYERS else value
    if isinstance(value, Mapping):
        return {renamed(key): renamed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(renamed(item) for item in value)
    return value


def _renamed_field(name, value):
    if name == "names" and value and isinstance(value[0], str):
        return [NAME] * len(value)
    if name == "class_labels":
        return [f"{CLASS} {i}" for i in range(len(value))]
    if name == "class_label":
        return CLASS
    if name == "label_names":
        return {c: f"{CLASS} {c}" for c in value}
    if name == "source":
        return f"folder /data/imagenet/validation/{NAME}"
    if name == "title" and isinstance(value, str):
        return f"classes {CLASS}, {CLASS}"
    if name == "units":
        return [f"{CLASS} {i}" for i in range(len(value))]
    return renamed(value)


def drawn_texts(figure):
    """Every Text artist that drawing `figure` (Agg, as saved) puts on the canvas, with its
    extent in pixels: `[(text, Bbox)]`."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # the layout settles on the first draw
    renderer = canvas.get_renderer()
    drawn, draw_text = [], renderer.draw_text

    def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip() and mtext not in drawn:
            drawn.append(mtext)
        return draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    renderer.draw_text = record
    figure.draw(renderer)
    return [(text, text.get_window_extent(renderer)) for text in drawn]


def outside(figure, *, slack=1.0):
    """Every drawn text of `figure` that reaches past its edges: `(text, extent)`."""
    box = figure.bbox
    found = []
    for text, extent in drawn_texts(figure):
        if (extent.x0 < box.x0 - slack or extent.y0 < box.y0 - slack
                or extent.x1 > box.x1 + slack or extent.y1 > box.y1 + slack):
            found.append((text.get_text(), tuple(np.round(extent.bounds))))
    return found


PLOTS = sorted(name for name in kvis.__all__ if name.startswith("plot_"))


@pytest.mark.parametrize("long_names", [False, True], ids=["real", "long names"])
@pytest.mark.parametrize("name", PLOTS)
def test_every_text_lies_inside_its_figure(results, name, long_names):
    result = renamed(results[name]) if long_names else results[name]
    figure = getattr(kvis, name)(result)
    assert not outside(figure), f"{name}: text outside the figure: {outside(figure)}"


@pytest.mark.parametrize("name", PLOTS)
def test_every_figure_fits_the_column_and_keeps_its_fonts(results, name):
    figure = getattr(kvis, name)(renamed(results[name]))
    assert figure.get_figwidth() <= WIDEST + 1e-9, f"{name}: {figure.get_figwidth():.2f} in"
    small = {(text.get_text(), text.get_fontsize()) for text, _ in drawn_texts(figure)
             if text.get_fontsize() < SMALLEST_FONT}
    assert not small, f"{name}: text under {SMALLEST_FONT} pt: {sorted(small)[:5]}"


def test_every_plot_function_is_drawn_here(results):
    assert sorted(results) == PLOTS


def test_text_wraps_at_spaces_slashes_and_commas_but_never_inside_a_number():
    from matplotlib.font_manager import FontProperties

    from kvis.plot.figures import wrap_text

    font = FontProperties(size=10)
    text = "activity over 10,000 images of resnet50/conv5_block3_out, and more words"
    for points in (60, 90, 140, 400):
        lines = wrap_text(text, points, font).split("\n")
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert not any(line.endswith("10,") for line in lines), lines
