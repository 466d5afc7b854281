"""kvis microscope: the pages hold what the techniques compute, a killed build resumes to the
same bytes, a site is never overwritten silently, bad input is one line, and a real browser
walks the site from its index to a unit and back."""

import errno
import json
import os
import re
import types
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_cnn
from helpers import browser_page
from test_dissection import COLOURS, colour_patches, write_concepts

import kvis.core.io
import kvis.microscope.images
from kvis.cli import main
from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.dataset.dissection import dissect
from kvis.dataset.examples import example_mosaic, top_examples
from kvis.dataset.scan import scan
from kvis.layers.inventory import layer_table
from kvis.microscope import layout
from kvis.microscope.build import build_microscope
from kvis.synthesis.maximize import maximize_filters
from kvis.synthesis.render import default_settings

LAYERS = ["conv1", "pool1", "conv2"]  # the tiny model's stage layers
CLASSES = ["ant", "bee", "cat"]  # not the concepts' names: a search finds each apart
STEPS = 8
MAXIMIZED = [0, 1, 2, 3, 4]  # conv2's units maximized: batches [0-3] and [4]
OPTIONS = dict(maximize={"conv2": MAXIMIZED}, seeds=2, steps=STEPS, batch_size=4,
               progress=False)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The tiny classifier, 24 images with labels, and a concept dataset of 16 px images."""
    model = tiny_cnn()
    configure_model(model, preprocessing="unit", class_names=CLASSES)
    data = np.random.default_rng(11).uniform(0, 1, (24, 16, 16, 3)).astype(np.float32)
    labels = np.arange(24) % 3
    concepts = write_concepts(tmp_path_factory.mktemp("concepts") / "concepts",
                              *colour_patches(12, size=16), list(COLOURS))
    return model, data, labels, concepts


@pytest.fixture(scope="module")
def site(classifier, tmp_path_factory):
    model, data, labels, concepts = classifier
    out = tmp_path_factory.mktemp("site") / "site"
    index = build_microscope(model, data, out, labels=labels, concepts=concepts, **OPTIONS)
    assert index == out / "index.html"
    return out


def _build(classifier, out, **options):
    model, data, labels, concepts = classifier
    return build_microscope(model, data, out, **{"labels": labels, "concepts": concepts,
                                                 **OPTIONS, **options})


def page_data(path):
    """The numbers a page shows, from its JSON block."""
    text = Path(path).read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="kvis-data">(.*?)</script>', text,
                      re.S)
    return json.loads(block.group(1))


def _rgb(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.size, path
    return image[..., ::-1] if image.ndim == 3 else image[..., None]


def _uint8(image):
    return np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


def _files(folder):
    """{relative path: bytes} of every file in a site."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _assert_same_site(folder, reference):
    """Every file byte for byte, the survey's .npz included."""
    files, expected = _files(folder), _files(reference)
    assert files.keys() == expected.keys() and layout.SURVEY in files
    assert [name for name in files if files[name] != expected[name]] == []


def _peaks(model, data, layer):
    maps = keras.Model(model.inputs, model.get_layer(layer).output).predict(data, verbose=0)
    return maps, maps.max(axis=(1, 2))


def test_unit_pages_hold_the_scan_and_its_top_examples(classifier, site):
    model, data, labels, _ = classifier
    found = scan(model, data, LAYERS, count=9, progress=False)
    for layer in LAYERS:
        top, stats = found.top[layer], found.stats[layer]
        _, peaks = _peaks(model, data, layer)
        for channel in range(len(stats.peak)):
            unit = page_data(site / layout.unit_page(layer, channel))
            assert [e["value"] for e in unit["top"]] == pytest.approx(top.values[channel],
                                                                      rel=1e-5)
            assert [e["image"] for e in unit["top"]] == top.images[channel].tolist()
            assert [[e["row"], e["col"]] for e in unit["top"]] == top.positions[channel].tolist()
            assert [e["label"] for e in unit["top"]] == [
                CLASSES[labels[i]] for i in top.images[channel]]
            assert unit["stats"] == {
                "mean": pytest.approx(stats.mean[channel], rel=1e-5),
                "peak": pytest.approx(stats.peak[channel], rel=1e-5),
                "fraction_active": stats.fraction_active[channel],
                "dead": channel in stats.dead, "rare": channel in stats.rare,
                "positions": stats.positions}
            counts, _ = np.histogram(peaks[:, channel], bins=len(unit["histogram"]["counts"]))
            assert unit["histogram"]["counts"] == counts.tolist()
            means = [peaks[labels == k, channel].mean() for k in range(3)]
            order = sorted(range(3), key=lambda k: (-means[k], k))
            assert [c["class"] for c in unit["classes"]] == order
            assert [c["mean_peak"] for c in unit["classes"]] == pytest.approx(
                [means[k] for k in order], rel=1e-5)
        shown = top_examples(model, found, data, layer=layer, channels=[1], progress=False)
        drawn = _rgb(site / layout.unit_image(layer, 1, layout.EXAMPLES)).astype(int)
        assert np.abs(drawn - _uint8(example_mosaic(shown, 0, gap=1))).max() <= 1
        assert np.array_equal(_rgb(site / layout.unit_image(layer, 1, layout.PATCH)),
                              shown.patches[0, 0])
    text = (site / layout.unit_page("conv2", 3)).read_text(encoding="utf-8")
    assert f"<td>{top.values[3, 0]:.4g}</td><td>image {top.images[3, 0]}</td>" in text


def test_fed_by_and_feeds_are_the_kernel_norms(classifier, site):
    model = classifier[0]
    kernel = model.get_layer("conv2").kernel.numpy()
    norms = np.sqrt((kernel.astype(np.float64) ** 2).sum(axis=(0, 1)))  # (4 inputs, 6 units)
    for unit in range(6):
        fed = page_data(site / layout.unit_page("conv2", unit))["fed_by"]
        expected = sorted(range(4), key=lambda i: (-norms[i, unit], i))
        assert fed["layer"] == "pool1" and fed["convs"] == ["conv2"]
        assert [u["channel"] for u in fed["units"]] == expected
        assert [u["strength"] for u in fed["units"]] == pytest.approx(norms[expected, unit],
                                                                      rel=1e-5)
        assert page_data(site / layout.unit_page("conv2", unit))["feeds"] is None
    for unit in range(4):
        found = page_data(site / layout.unit_page("pool1", unit))
        expected = sorted(range(6), key=lambda c: (-norms[unit, c], c))
        assert [u["channel"] for u in found["feeds"]["units"]] == expected
        assert found["fed_by"]["units"] == [{"channel": unit, "strength": 1.0}]  # max pooling
    assert page_data(site / layout.unit_page("conv1", 0))["fed_by"] is None
    text = (site / layout.unit_page("conv2", 0)).read_text(encoding="utf-8")
    first = sorted(range(4), key=lambda i: (-norms[i, 0], i))[0]
    assert f'href="../../layers/pool1/{first}.html"' in text
    assert f'src="../../layers/pool1/{first}/patch.png"' in text


def test_class_pages_are_weight_times_mean_activation(classifier, site):
    model, data, labels, _ = classifier
    maps, _ = _peaks(model, data, "conv2")
    weights = model.get_layer("predictions").kernel.numpy()  # (6 units, 3 classes)
    for k, name in enumerate(CLASSES):
        page = page_data(site / layout.class_page(k))
        assert (page["name"], page["images"]) == (name, 8)
        expected = weights[:, k] * maps[labels == k].mean(axis=(0, 1, 2))
        order = np.argsort(-expected, kind="stable")
        assert [u["channel"] for u in page["contributions"]] == order.tolist()
        assert [u["contribution"] for u in page["contributions"]] == pytest.approx(
            expected[order], rel=1e-4, abs=1e-7)
        for layer in LAYERS:
            means = _peaks(model, data, layer)[1][labels == k].mean(axis=0)
            assert [u["channel"] for u in page["active"][layer]] == \
                np.argsort(-means, kind="stable")[:16].tolist()
    index = page_data(site / "index.html")
    assert [c["name"] for c in index["classes"]] == CLASSES
    assert [row["path"] for row in index["layers"]] == [r.path for r in layer_table(model)]


def test_concepts_are_the_dissections(classifier, site):
    model, _, _, concepts = classifier
    found = dissect(model, concepts, LAYERS, progress=False)
    listed = []
    for u, (layer, channel) in enumerate(zip(found.unit_layers, found.channels)):
        shown = page_data(site / layout.unit_page(LAYERS[layer], channel))["concepts"]
        order = [k for k in np.argsort(-found.iou[u], kind="stable")[:3] if found.iou[u, k] > 0]
        assert [c["concept"] for c in shown] == [found.concepts[k] for k in order]
        assert [c["iou"] for c in shown] == pytest.approx(found.iou[u, order], rel=1e-6)
        listed += [[int(layer), int(channel)]] if order else []
    text = (site / "assets" / "search-index.js").read_text()
    index = json.loads(text.removeprefix("window.KVIS_SEARCH = ").removesuffix(";\n"))
    assert [entry[:2] for entry in index["concepts"]] == listed and listed
    assert [layer[0] for layer in index["layers"]] == LAYERS


def test_maximization_images_are_maximize_filters_for_the_units_asked(classifier, site):
    model = classifier[0]
    settings = default_settings(model, steps=STEPS)
    for seed in range(2):
        for batch in ([0, 1, 2, 3], [4]):
            made = maximize_filters(model, "conv2", batch, seed=seed, batch_size=len(batch),
                                    settings=settings, progress=False)
            for image, score, unit in zip(made.images, made.scores, batch):
                drawn = _rgb(site / layout.unit_image("conv2", unit, layout.maximization(seed)))
                assert np.abs(drawn.astype(int) - _uint8(image)).max() <= 1
                shown = page_data(site / layout.unit_page("conv2", unit))["maximization"]
                assert shown[seed] == {"seed": seed, "score": pytest.approx(score, rel=1e-6)}
    assert not list(site.glob("layers/conv1/*/max-*.png"))
    assert not (site / layout.unit_image("conv2", 5, layout.maximization(0))).exists()
    unit = (site / layout.unit_page("conv2", 0)).read_text()
    assert 'src="../../layers/conv2/0/max-1.png"' in unit
    assert "Not computed (yet)" in (site / layout.unit_page("conv2", 5)).read_text()
    tiles = (site / layout.layer_page("conv2")).read_text()
    assert tiles.count("/max-0.png") == len(MAXIMIZED) and tiles.count("/patch.png") == 6


@pytest.mark.parametrize("stage", ["write_examples", "write_maximization"])
def test_a_build_killed_halfway_resumes_to_the_same_bytes(classifier, site, stage, tmp_path,
                                                          monkeypatch):
    real, calls = getattr(kvis.microscope.images, stage), []

    def dying(*args, **options):
        calls.append(stage)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **options)

    monkeypatch.setattr(kvis.microscope.images, stage, dying)
    out = tmp_path / "site"
    with pytest.raises(KeyboardInterrupt):
        _build(classifier, out)
    monkeypatch.undo()
    assert not (out / "index.html").exists() or stage == "write_maximization"
    with pytest.raises(KvisError, match="pass --resume to finish it or --overwrite to "
                                        "replace it"):
        _build(classifier, out)
    _build(classifier, out, resume=True)
    _assert_same_site(out, site)


def test_a_full_disk_midway_keeps_valid_files_and_resume_finishes(classifier, site, tmp_path,
                                                                  monkeypatch):
    writes = []

    def replace(source, target):
        writes.append(target)
        if len(writes) > 40:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.replace(source, target)

    monkeypatch.setattr(kvis.core.io, "os", types.SimpleNamespace(**{**vars(os),
                                                                     "replace": replace}))
    out = tmp_path / "site"
    with pytest.raises(KvisError, match=r"No space left on device; what was written is kept: "
                                        r"run again with resume \(--resume\)") as error:
        _build(classifier, out)
    assert "\n" not in str(error.value)
    monkeypatch.undo()
    written = _files(out)
    assert written and not [name for name in written if "/." in f"/{name}"]
    for name in written:
        if name.endswith(".png"):
            _rgb(out / name)
        elif name.endswith(".html"):
            assert written[name].endswith(b"</body></html>\n")
    _build(classifier, out, resume=True)
    _assert_same_site(out, site)


def test_another_models_site_is_refused_by_name_and_this_models_without_resume(classifier,
                                                                               site, tmp_path):
    model, data, labels, _ = classifier
    before = _files(site)
    other = tiny_cnn("other")
    refused = f"{site} holds the microscope of model 'tiny', not 'other'; choose another"
    with pytest.raises(KvisError, match=re.escape(refused)):
        build_microscope(other, data, site, progress=False)
    asked = (f"{site} holds a microscope of model 'tiny' (complete); pass --resume to finish "
             "it or --overwrite to replace it")
    with pytest.raises(KvisError, match=re.escape(asked)):
        build_microscope(model, data, site, labels=labels, progress=False)
    with pytest.raises(KvisError, match="built with other settings"):
        build_microscope(model, data, site, labels=labels, resume=True, progress=False)
    assert _files(site) == before
    (tmp_path / "notes.txt").write_text("not a site")
    with pytest.raises(KvisError, match="holds files but no kvis microscope"):
        build_microscope(model, data, tmp_path, overwrite=True, progress=False)
    copy = tmp_path / "copy"
    for name, data_ in before.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data_)
    _build(classifier, copy, layers=["conv1"], maximize={}, concepts=None, overwrite=True)
    assert sorted(p.name for p in (copy / "layers").iterdir()) == ["conv1", "conv1.html"]
    assert json.loads((copy / "kvis-microscope.json").read_text())["settings"]["layers"] == [
        "conv1"]


def test_bad_input_is_one_line_and_writes_nothing(classifier, tmp_path):
    model, data, labels, _ = classifier
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="dense_only")
    (tmp_path / "empty").mkdir()
    cases = [
        (dict(data=tmp_path / "empty"), "dataset folder .* is empty"),
        (dict(data=data[:0]), "a dataset is a folder, an IDX images file"),
        (dict(layers=["gap"]), "needs a spatial layer; 'gap' \\(GlobalAveragePooling2D\\)"),
        (dict(model=dense), "needs a model with conv layers; 'dense_only' has none"),
        (dict(out=Path("/proc/kvis/site")), "cannot write /proc/kvis/site"),
        (dict(maximize={"gap": None}), "cannot maximize units of 'gap': it is not one of"),
        (dict(maximize={"conv2": [9]}), r"conv2 unit 9 is out of range \(0-5\)"),
        (dict(seeds=0), "seeds and batch_size must be at least 1"),
        (dict(resume=True, overwrite=True), "pass one of them"),
    ]
    for change, message in cases:
        arguments = {**dict(model=model, data=data, out=tmp_path / "site", labels=labels,
                            progress=False), **change}
        with pytest.raises(KvisError, match=message) as error:
            build_microscope(arguments.pop("model"), arguments.pop("data"),
                             arguments.pop("out"), **arguments)
        assert "\n" not in str(error.value)
        assert not (tmp_path / "site").exists(), change


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_command_builds_a_site_and_says_what_it_does(tmp_path):
    out = tmp_path / "site"
    result = run("microscope", "demo", "demo", "--layers", "block1_pool,block2_pool",
                 "--maximize", "block1_pool:0-1", "--seeds", 1, "--steps", 4, "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
    assert "activation maximization: 2 units x 1 seeds x 4 steps, about" in result.output
    assert f"wrote {out / 'index.html'}" in result.output
    assert [c["name"] for c in page_data(out / "index.html")["classes"]][:2] == [
        "t-shirt/top", "trouser"]
    assert (out / layout.unit_image("block1_pool", 1, "max-0.png")).is_file()
    assert not (out / layout.unit_image("block1_pool", 2, "max-0.png")).exists()
    again = run("microscope", "demo", "demo", "--layers", "block1_pool", "--out", out)
    assert again.exit_code == 1 and "pass --resume to finish it" in again.output


@pytest.mark.parametrize("args, message", [
    (["demo", "{empty}"], "dataset folder"),
    (["demo", "demo", "--layers", "fc1"], "needs a spatial layer; 'fc1' (Dense)"),
    (["demo", "demo", "--maximize", "block3_pool"], "write all, none, or LAYER:INDICES"),
    (["demo", "demo", "--maximize", "block3_pool:5-2"], "'5-2' is a backwards range"),
    (["demo", "demo", "--maximize", "block9:1"], "cannot maximize units of 'block9'"),
    (["demo", "demo", "--resume", "--overwrite"], "pass one of them"),
])
def test_command_mistakes_are_one_line(args, message, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("microscope", *[a.format(empty=tmp_path / "empty") for a in args],
                 "--out", tmp_path / "site")
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_a_browser_walks_the_site_and_finds_units_classes_and_concepts(site):
    index = json.loads((site / "assets" / "search-index.js").read_text()
                       .removeprefix("window.KVIS_SEARCH = ").removesuffix(";\n"))
    concept = index["concepts"][0][2]
    with browser_page() as page:

        def images_decode():
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img", "all => all.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert all(done and width > 0 and height > 0 for done, width, height in sizes), \
                (page.url, sizes)
            return len(sizes)

        page.goto((site / "index.html").as_uri())
        page.click('a[href="layers/conv2.html"]')
        assert page.url.endswith("/layers/conv2.html") and images_decode() == 6 + 5
        page.select_option("#sort", "peak")
        peaks = page.eval_on_selector_all(".tile", "all => all.map(t => Number(t.dataset.peak))")
        assert peaks == sorted(peaks, reverse=True)
        page.click('a.tile[data-channel="3"]')
        assert page.url.endswith("/layers/conv2/3.html") and images_decode() >= 3
        page.keyboard.press("j")
        page.wait_for_url("**/layers/conv2/4.html")
        page.go_back()
        page.go_back()
        assert page.url.endswith("/layers/conv2.html")
        page.click("a.home")
        assert page.url.endswith("/index.html")
        for query, found in (("conv2:5", "layers/conv2/5.html"), ("bee", "classes/1.html"),
                             (concept, "layers/")):
            page.fill("#search", query)
            first = page.get_attribute("#search-results a", "href")
            assert first.startswith(found), (query, first)
        page.fill("#search", "bee")
        page.press("#search", "Enter")
        page.wait_for_url("**/classes/1.html")
        images_decode()
        page.goto((site / layout.layer_page("conv1")).as_uri())
        assert images_decode() == 4 + 1  # its patches and the filters
    assert not page.problems, page.problems
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests
