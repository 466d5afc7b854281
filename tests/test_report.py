"""kvis report: the sections hold what the techniques compute, the page is self-contained, and
`kvis report` with no arguments writes a page that a real browser shows whole."""

import base64
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import nested_functional, ops_model, tiny_base, tiny_cnn
from helpers import browser_page

import kvis.report.sections
from kvis.cli import main
from kvis.core.errors import KvisError
from kvis.core.images import load_image
from kvis.core.models import configure_model
from kvis.core.vocabulary import REPORT_SECTIONS
from kvis.dataset.examples import interesting_channels, write_index
from kvis.dataset.scan import scan
from kvis.deconv.deconvnet import deconvnet
from kvis.layers.feature_maps import feature_maps, rank_channels
from kvis.layers.inventory import layer_table
from kvis.microscope import layout
from kvis.microscope.build import build_microscope
from kvis.report.page import report_html, write_report
from kvis.report.sections import TITLES, build_report


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


class _Page(HTMLParser):
    """What a page holds: image sources, element ids, link targets and external references."""

    def __init__(self, text):
        super().__init__()
        self.images, self.ids, self.links, self.tags = [], set(), [], set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def _decoded(source):
    assert source.startswith("data:image/png;base64,"), source[:40]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(source.split(",", 1)[1]), np.uint8),
                         cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 0 and image.std() > 0
    return image


def _check_self_contained(text):
    page = _Page(text)
    assert page.images and all(_decoded(source).size for source in page.images)
    assert all(link.startswith("#") and link[1:] in page.ids for link in page.links)
    assert "script" not in page.tags and not re.search(r"(src|href)=\"(https?:|//)", text)
    return page


@pytest.fixture(scope="module")
def tiny_classifier():
    model = tiny_cnn()
    configure_model(model, preprocessing="unit", class_names=["red", "green", "blue"])
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return model, load_image(pixels, model)


@pytest.fixture(scope="module")
def tiny_report(tiny_classifier):
    model, image = tiny_classifier
    data = np.random.default_rng(4).uniform(0, 1, (24, 16, 16, 3)).astype(np.float32)
    return build_report(model, image, fast=True, data=data, progress=False)


def test_every_section_holds_what_its_technique_computes(tiny_classifier, tiny_report):
    model, image = tiny_classifier
    sections = {section.key: section for section in tiny_report.sections}
    assert list(sections) == list(REPORT_SECTIONS) and not tiny_report.left_out
    probabilities = model.predict(image.x, verbose=0)[0]
    best = int(np.argmax(probabilities))
    assert (f"{['red', 'green', 'blue'][best]} ({probabilities[best]:.1%})"
            in sections["prediction"].parts[0].caption)
    header, rows = sections["model"].parts[1].table
    table = layer_table(model)
    assert [row[0] for row in rows] == [row.path for row in table]
    conv2 = next(row for row in rows if row[0] == "conv2")
    field = next(row for row in table if row.path == "conv2").receptive_field
    assert conv2[4:] == ("×".join(map(str, field.size)), "×".join(map(str, field.stride)))
    maps = feature_maps(model, image, ["conv2"], progress=False)
    top = rank_channels(maps["conv2"][0])[0][:4]
    caption = sections["maximization"].parts[-1].caption
    assert caption.startswith("conv2:") and ", ".join(f"#{c}" for c in top) in caption
    for section in tiny_report.sections:
        for part in section.parts:
            assert part.caption and (part.table is not None or _decoded(
                "data:image/png;base64," + base64.b64encode(part.png).decode()).size)


def test_the_statistics_table_is_the_scan(tiny_classifier, tiny_report):
    model, _ = tiny_classifier
    data = np.random.default_rng(4).uniform(0, 1, (24, 16, 16, 3)).astype(np.float32)
    found = scan(model, data, progress=False)
    section = next(s for s in tiny_report.sections if s.key == "statistics")
    rows = {row[0]: row for row in section.parts[0].table[1]}
    for layer in found.layers:
        stats = found.stats[layer]
        assert rows[layer][1] == str(len(stats.active))
        assert rows[layer][2] == ("none" if not len(stats.dead) else
                                  f"{len(stats.dead)}: " + ", ".join(f"#{c}" for c in
                                                                     stats.dead[:16])
                                  + (", ..." if len(stats.dead) > 16 else ""))


def test_the_page_is_self_contained_and_its_links_reach_sections(tiny_report, tmp_path):
    path = write_report(tiny_report, tmp_path / "page.html")
    text = path.read_text(encoding="utf-8")
    page = _check_self_contained(text)
    assert set(REPORT_SECTIONS) <= page.ids
    assert len(page.images) == sum(part.png is not None for section in tiny_report.sections
                                   for part in section.parts)
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # shareable, not mkstemp's 0600


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_class_asked_is_the_class_explained(tiny_classifier):
    model, image = tiny_classifier
    report = build_report(model, image, classes="green", fast=True, progress=False,
                          sections=["attention", "occlusion"])
    captions = [part.caption for section in report.sections for part in section.parts]
    assert all("evidence for green" in c for c in captions[:-1])
    assert "the probability of green" in captions[-1]
    with pytest.raises(KvisError, match="unknown class 'gren' for model 'tiny'; closest: green"):
        build_report(model, image, classes="gren", progress=False)


def test_a_view_the_model_cannot_give_is_left_out_with_its_reason():
    features_only = tiny_base()
    configure_model(features_only, preprocessing="unit")
    image = load_image(np.full((16, 16, 3), 120, np.uint8), features_only)
    report = build_report(features_only, image, fast=True, progress=False,
                          sections=["model", "prediction", "features", "attention", "occlusion",
                                    "top-examples"])
    assert [section.key for section in report.sections] == ["model", "features"]
    reasons = dict(report.left_out)
    assert "needs a classifier with output (N, classes)" in reasons["Attention maps"]
    assert "needs a classifier" in reasons["Occlusion sensitivity"]
    assert reasons["Top-9 dataset examples"] == ("no dataset given: the dataset views need a "
                                                 "dataset to scan, or an earlier scan")
    text = report_html(report)
    assert "Attention maps: left out (" in text and 'id="attention"' not in text


def test_a_nested_fine_tuned_model_reports_its_base_layers():
    model = nested_functional(tiny_base())
    configure_model(model, preprocessing="unit")
    image = load_image(np.random.default_rng(5).integers(0, 256, (16, 16, 3)), model)
    report = build_report(model, image, fast=True, progress=False,
                          sections=["features", "deconvnet", "attention"])
    assert [section.key for section in report.sections] == ["features", "deconvnet",
                                                            "attention"]
    captions = " ".join(part.caption for section in report.sections for part in section.parts)
    assert "base/conv2" in captions and "grad-cam at base/conv2" in captions


def test_operation_nodes_are_rows_of_the_table_and_their_examples_are_shown():
    model = ops_model()
    configure_model(model, preprocessing="unit", class_names=["a", "b", "c"])
    image = load_image(np.random.default_rng(7).integers(0, 256, (16, 16, 3)), model)
    data = np.random.default_rng(8).uniform(0, 1, (12, 16, 16, 3)).astype(np.float32)
    report = build_report(model, image, fast=True, data=data, progress=False,
                          sections=["model", "top-examples"])
    assert [section.key for section in report.sections] == ["model", "top-examples"]
    _, rows = report.sections[0].parts[1].table
    gated = next(row for row in rows if row[1] == "Multiply (op)" and row[2] == "N×8×8×8")
    assert gated[3:] == ("0", "7×7", "2×2")  # the fields checked against the gradient support
    assert [row[0] for row in rows] == [row.path for row in layer_table(model)]
    captions = " ".join(part.caption for part in report.sections[1].parts)
    assert gated[0] in captions


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "convnext_tiny"])
def test_applications_with_operation_nodes_get_their_model_sections(name, request):
    model = request.getfixturevalue(name)
    configure_model(model, preprocessing="none")
    image = load_image(np.random.default_rng(9).integers(0, 256, (32, 32, 3)), model)
    report = build_report(model, image, fast=True, progress=False,
                          sections=["model", "filters"])
    assert [section.key for section in report.sections] == ["model", "filters"]
    _, rows = report.sections[0].parts[1].table
    assert [row[0] for row in rows] == [row.path for row in layer_table(model)]
    assert any(row[1].endswith(" (op)") and row[3] == "0" and row[4] for row in rows)


def test_a_scan_is_reused_not_run_again(tiny_classifier, monkeypatch):
    model, image = tiny_classifier
    data = np.random.default_rng(6).uniform(0, 1, (12, 16, 16, 3)).astype(np.float32)
    found = scan(model, data, ["conv1", "conv2"], count=4, progress=False)
    monkeypatch.setattr(kvis.report.sections, "scan", None)  # any new scan would fail
    report = build_report(model, image, fast=True, data=data, found=found, progress=False,
                          sections=["top-examples", "statistics"])
    assert [section.key for section in report.sections] == ["top-examples", "statistics"]
    assert "each channel's 4 strongest images (each at its strongest position), channels in " \
           "order of their max, over 12 images" in report.sections[0].parts[-1].caption
    other = keras.models.clone_model(model)
    other.name = "other"
    with pytest.raises(KvisError, match="the scan is of model 'tiny', not 'other'"):
        build_report(other, image, found=found, progress=False)


def test_files_the_scan_could_not_read_are_counted_and_listed_in_the_report(tiny_classifier,
                                                                           tmp_path):
    model, image = tiny_classifier
    for i, pixels in enumerate(np.random.default_rng(7).integers(0, 256, (4, 16, 16, 3))):
        cv2.imwrite(str(tmp_path / f"{i}.png"), pixels.astype(np.uint8))
    (tmp_path / "2.png").write_text("a text file named .png")
    with pytest.warns(UserWarning, match="skipped 1 of 4 images that could not be read: 2.png"):
        report = build_report(model, image, data=tmp_path, progress=False,
                              sections=["top-examples", "statistics"])
    for section in report.sections:
        assert [note.split(" (")[0] for note in section.notes][:1] == [
            "Skipped 1 of 4 images that could not be read: 2.png"]
    assert "Skipped 1 of 4 images that could not be read: 2.png (cannot read image " in \
        report_html(report)


def test_mistakes_in_the_python_api_are_one_line(tiny_classifier):
    model, image = tiny_classifier
    with pytest.raises(KvisError, match="section 'filter'; choose from prediction, model"):
        build_report(model, image, sections=["filter"])
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="dense_only")
    with pytest.raises(KvisError, match="model 'dense_only' has no conv layers"):
        build_report(dense, np.zeros((1, 4), np.float32))
    with pytest.raises(KvisError, match="a report explains one image; got 2"):
        build_report(model, np.zeros((2, 16, 16, 3), np.float32))


def test_the_cli_reuses_a_scan_folder_and_its_recorded_images(tmp_path, monkeypatch):
    from kvis.core.models import load_model

    found = scan(load_model("demo"), "demo", ["block2_conv2"], count=4, progress=False)
    write_index(found, tmp_path / "scan" / "index.json", data="demo")
    monkeypatch.setattr(kvis.report.sections, "scan", None)
    result = run("report", "demo", "--scan", tmp_path / "scan", "--fast", "--sections",
                 "prediction,top-examples,statistics", "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert 'id="top-examples"' in text and 'id="statistics"' in text and 'id="filters"' not in text
    assert ("block2_conv2: each channel&#x27;s 4 strongest images (each at its strongest "
            "position), channels in order of their max, over 400 images") in text


@pytest.mark.parametrize("args, message", [
    (["report", "--out", "{blocker}/sub"], "cannot write"),
    (["report", "demo", "{bad}", "--fast"], "cannot read"),
    (["report", "--dataset", "{empty}", "--fast"], "no image files (.png"),
    (["report", "--sections", "features,filter"], "unknown section 'filter'"),
    (["report", "vgg16"], "give an IMAGE for vgg16"),
    (["report", "--class", "boot", "--sections", "attention"], "unknown class 'boot'"),
    (["report", "--class", "1,2"], "a report explains one class"),
    (["report", "demo", "missing.png"], "does not exist"),
])
def test_user_mistakes_get_one_line_and_leave_no_page(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = run(*[a.format(blocker="blocker", bad="bad.png", empty="empty") for a in args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not list(tmp_path.rglob("*.html"))


def test_an_interrupted_write_leaves_no_page(tiny_report, tmp_path, monkeypatch):
    import pathlib

    def write_half(self, text, **options):
        with open(self, "w") as file:
            file.write(text[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(pathlib.Path, "write_text", write_half)
    with pytest.raises(KeyboardInterrupt):
        write_report(tiny_report, tmp_path / "page.html")
    assert not list(tmp_path.iterdir())


def _data():
    return np.random.default_rng(4).uniform(0, 1, (24, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_site(tiny_classifier, tmp_path_factory):
    """A microscope of the tiny model with pages for conv2's units only (no maximization)."""
    out = tmp_path_factory.mktemp("microscope") / "site"
    build_microscope(tiny_classifier[0], _data(), out, layers=["conv2"], maximize={},
                     progress=False)
    return out


def test_with_a_microscope_each_unit_shown_links_to_its_page(tiny_classifier, tiny_site,
                                                             tmp_path):
    model, image = tiny_classifier
    report = build_report(model, image, fast=True, data=_data(), microscope=tiny_site,
                          sections=["maximization", "deconvnet", "top-examples"],
                          progress=False)
    parts = {(section.key, part.caption.split(":")[0]): part for section in report.sections
             for part in section.parts}
    maps = feature_maps(model, image, ["conv2"], progress=False)
    projected = deconvnet(model, image, "conv2", count=4, progress=False)
    shown = {("maximization", "conv2"): rank_channels(maps["conv2"][0])[0][:4],
             ("deconvnet", "conv2"): projected.channels,
             ("top-examples", "conv2"): interesting_channels(scan(model, _data(),
                                                                  progress=False), "conv2", 8)}
    assert set(parts) == {*shown, ("maximization", "conv1"), ("top-examples", "pool1")}
    for key, part in parts.items():  # conv1 and pool1 have no page in the site: no links
        expected = [f"conv2:{c}" for c in shown.get(key, [])]
        assert [label for label, _ in part.links] == expected and len(expected) in (0, 4, 6)
    path = write_report(report, tmp_path / "reports" / "page.html")
    text = path.read_text(encoding="utf-8")
    links = [link for link in _Page(text).links if not link.startswith("#")]
    assert len(links) == 4 + 4 + 6
    for link, (label, _) in zip(links, [link for part in parts.values() for link in part.links]):
        assert not link.startswith(("/", "file:")) and link.startswith("../")  # relative
        target = (path.parent / unquote(link)).resolve()
        layer, unit = label.split(":")
        assert target == (tiny_site / layout.unit_page(layer, unit)).resolve()
        assert f"<h1>{layer} unit {unit}" in target.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"(https?:|//)", text)


def test_without_a_microscope_no_unit_links(tiny_report):
    assert not [part.links for section in tiny_report.sections for part in section.parts
                if part.links]
    assert "Microscope pages" not in report_html(tiny_report)


def test_another_models_microscope_or_no_site_is_refused_in_one_line(tiny_classifier,
                                                                       tiny_site, tmp_path):
    _, image = tiny_classifier
    other = tiny_cnn("other")
    for model, site, message in [
            (other, tiny_site, f"{tiny_site} holds the microscope of model 'tiny', not 'other'; "
                               "give a microscope of this model"),
            (tiny_classifier[0], tmp_path, f"{tmp_path} is not a kvis microscope (it has no "
                                           "kvis-microscope.json)")]:
        with pytest.raises(KvisError, match=re.escape(message)) as error:
            build_report(model, image, sections=["prediction"], microscope=site,
                         progress=False)
        assert "\n" not in str(error.value)
    result = run("report", "--sections", "prediction", "--microscope", tiny_site, "--out",
                 tmp_path / "page.html")
    assert result.exit_code == 1 and result.output.count("Error:") == 1, result.output
    assert "holds the microscope of model 'tiny', not 'kvis_demo'" in result.output
    assert not (tmp_path / "page.html").exists()


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    """The page of the README's main command, `kvis report` with no arguments."""
    folder = tmp_path_factory.mktemp("report")
    command = Path(sys.executable).with_name("kvis")  # the console script of this install
    quiet = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([command, "report", "--out", "page"], cwd=folder, env=quiet,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return folder / "page" / "index.html", result


@pytest.mark.slow
def test_report_with_no_arguments_shows_every_view_of_the_demo(demo_page):
    path, result = demo_page
    page = _check_self_contained(path.read_text(encoding="utf-8"))
    assert set(REPORT_SECTIONS) <= page.ids
    for number, key in enumerate(REPORT_SECTIONS, 1):  # progress: a line per section, timed
        title = re.escape(TITLES[key].lower())
        assert re.search(rf"^\[{number}/{len(REPORT_SECTIONS)}\] {title}: \d+\.\d s$",
                         result.stderr, re.MULTILINE)
    assert "oneDNN" not in result.stderr and f"wrote page{os.sep}index.html" in result.stdout


@pytest.mark.slow
def test_the_page_shows_whole_in_a_real_browser(demo_page):
    path, _ = demo_page
    with browser_page() as page:
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        sizes = page.eval_on_selector_all(
            "img", "images => images.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(sizes) > 10 and all(done and width > 0 and height > 0
                                       for done, width, height in sizes), sizes
        targets = page.eval_on_selector_all("nav a", "links => links.map(a => a.hash)")
        assert [t[1:] for t in targets] == list(REPORT_SECTIONS)
        for target in targets:
            page.click(f'nav a[href="{target}"]')
            where = page.evaluate(f"""() => {{
                const box = document.getElementById("{target[1:]}").getBoundingClientRect();
                return [location.hash, box.top, window.innerHeight]; }}""")
            assert where[0] == target and -2 <= where[1] < where[2], (target, where)
            page.evaluate("window.scrollTo(0, 0)")
    assert not page.problems, page.problems
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests


@pytest.mark.integration
def test_a_random_weights_model_says_so_on_the_page_and_the_console(tmp_path):
    image = tmp_path / "cat.png"
    cv2.imwrite(str(image), np.full((224, 224, 3), 120, np.uint8))
    result = run("report", "resnet50", image, "--weights", "none", "--sections", "prediction",
                 "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert "warning: resnet50 has random weights (--weights none)" in result.output
    page = (tmp_path / "page.html").read_text()
    assert "<title>kvis report: resnet50 (random weights) on cat.png</title>" in page
    assert '<p class="warning">The weights of this model are random' in page
    assert re.search(r"top 5 of 1000 classes: [^<(]+ \(random weights\) \(\d", page)


def _png_width(png):
    return int.from_bytes(png[16:20], "big")


def test_the_column_holds_the_widest_figure_at_the_caption_size():
    from kvis.plot.figures import PNG_MARGIN, SMALLEST_FONT, WIDEST
    from kvis.report.page import _STYLE, CAPTION_PX, COLUMN_PX, FIGURE_DPI, MAIN_PX

    assert (WIDEST + 2 * PNG_MARGIN) * FIGURE_DPI <= COLUMN_PX
    assert SMALLEST_FONT * FIGURE_DPI / 72 >= CAPTION_PX
    assert f"max-width: {MAIN_PX}px" in _STYLE and f"font-size: {CAPTION_PX}px" in _STYLE


def test_wide_figures_wrap_into_the_column(demo):
    """Statistics of 5 layers (2100 px before) and occlusion (1600 px) fit the column at the
    page's dpi, their text at least the caption's size."""
    from test_figures import drawn_texts

    from kvis.attribution.occlusion import occlusion, plot_occlusion
    from kvis.core.demo import demo_images
    from kvis.dataset.statistics import plot_statistics
    from kvis.plot.figures import SMALLEST_FONT, png_bytes
    from kvis.report.page import COLUMN_PX, FIGURE_DPI

    pixels, _ = demo_images()
    layers = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1"]
    found = scan(demo, pixels[:8], layers, progress=False)
    image = load_image(pixels[0], demo)
    for figure in (plot_statistics(found),
                   plot_occlusion(occlusion(demo, image, size=7, stride=7, progress=False))):
        assert _png_width(png_bytes(figure, dpi=FIGURE_DPI)) <= COLUMN_PX
        assert min(text.get_fontsize() for text, _ in drawn_texts(figure)) >= SMALLEST_FONT


def test_a_low_confidence_prediction_is_drawn_to_its_scale():
    from kvis.report.model_views import prediction_figure

    probabilities = np.float32([0.12, 0.11, 0.1, 0.1, 0.09])
    figure = prediction_figure(np.zeros((8, 8, 3), np.uint8), list("abcde"), probabilities)
    bars = figure.axes[1]
    assert bars.get_xlim() == (0, 0.15)
    labels = [text.get_text() for text in bars.texts]
    assert labels == ["12.0%", "11.0%", "10.0%", "10.0%", "9.0%"]
    widths = [patch.get_width() for patch in bars.patches]
    np.testing.assert_allclose(widths, probabilities)


def test_captions_say_what_their_figures_draw(demo):
    from kvis.report import model_views, unit_views
    from kvis.report.sections import _Job

    job = _Job(demo, load_image(_demo_pixels(), demo), None, False, None, None, False)
    (first, _), _ = model_views.filters(job)
    scale = float(np.abs(demo.get_layer("block1_conv1").kernel).max())
    assert f"all on one scale, ±{scale:.3g}" in first.caption
    assert "own range" not in first.caption
    parts, _ = unit_views.deconvnet(job)
    shown = [part.caption.split(":")[0] for part in parts]
    assert shown == ["block1_conv2", "block2_conv2", "block3_conv1"]  # not block3_pool too


def _demo_pixels():
    from kvis.core.demo import demo_images

    return demo_images()[0][0]
