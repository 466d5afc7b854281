"""The microscope's survey on Apache Beam (DirectRunner), and a site built from a survey file."""

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner
from test_distributed_scan import _beam_or_skip

from kvis.cli import main
from kvis.core.errors import KvisError
from kvis.core.models import load_model
from kvis.dataset.sources import image_source
from kvis.microscope import layout
from kvis.microscope.build import build_microscope
from kvis.microscope.survey import load_survey, save_survey, survey

pytestmark = pytest.mark.slow  # Beam, and two builds of the demo model's site

LAYERS = ("block2_pool", "block3_pool")


@pytest.fixture(scope="module")
def model():
    return load_model("demo")


@pytest.fixture(scope="module")
def surveys(model, tmp_path_factory):
    """The Beam survey file (13 batches of 32 in 5 shards, given to Beam last first, so that
    the merge must put the rows back in image order) and the in-process survey."""
    _beam_or_skip()
    from kvis.microscope import beam

    path = tmp_path_factory.mktemp("beam") / "survey.npz"
    cut = beam.shards
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(beam, "shards", lambda *args: cut(*args)[::-1])
        assert len(beam.shards(image_source("demo"), 32, 3)) == 5
        beam.survey_on_beam("demo", "demo", path, layers=list(LAYERS), batch_size=32,
                            batches_per_shard=3)
    return path, survey(model, "demo", list(LAYERS), batch_size=32, progress=False)


def test_the_beam_survey_is_the_in_process_survey(surveys):
    path, single = surveys
    on_beam = load_survey(path)
    assert (on_beam.model, on_beam.layers) == (single.model, single.layers) == ("kvis_demo",
                                                                              LAYERS)
    assert on_beam.scan.images == single.scan.images == 400
    assert on_beam.scan.batches == single.scan.batches == 13
    for layer in LAYERS:
        for field in ("values", "images", "positions"):
            np.testing.assert_array_equal(getattr(on_beam.scan.top[layer], field),
                                          getattr(single.scan.top[layer], field))
        for field in ("peak", "active"):
            np.testing.assert_array_equal(getattr(on_beam.scan.stats[layer], field),
                                          getattr(single.scan.stats[layer], field))
        np.testing.assert_allclose(on_beam.scan.stats[layer].total,
                                   single.scan.stats[layer].total, rtol=1e-12)
        np.testing.assert_array_equal(on_beam.peaks[layer], single.peaks[layer])
    np.testing.assert_array_equal(on_beam.labels, single.labels)
    assert list(on_beam.contributions) == list(single.contributions) == ["block3_pool"]
    # Summed per shard, then divided: the same up to the order of the float64 sums.
    np.testing.assert_allclose(on_beam.contributions["block3_pool"],
                               single.contributions["block3_pool"], rtol=1e-6, atol=1e-9)
    assert on_beam.dissection is None


def test_a_site_from_the_survey_file_is_the_site_built_in_process(model, surveys, tmp_path):
    path, _ = surveys
    options = dict(layers=list(LAYERS), maximize={}, progress=False)
    here = build_microscope(model, "demo", tmp_path / "here", **options).parent
    result = CliRunner().invoke(main, ["microscope", "demo", "demo", "--out",
                                       str(tmp_path / "there"), "--layers", ",".join(LAYERS),
                                       "--maximize", "none", "--survey", str(path)])
    assert result.exit_code == 0, result.output
    there = tmp_path / "there"
    for page in (layout.unit_page("block3_pool", 5), layout.unit_page("block2_pool", 17),
                 layout.layer_page("block3_pool"), layout.INDEX):
        assert (here / page).read_bytes() == (there / page).read_bytes(), page
    # The site keeps the survey it was given, so --resume does not survey again.
    kept = load_survey(there / layout.SURVEY)
    np.testing.assert_array_equal(kept.peaks["block3_pool"],
                                  load_survey(path).peaks["block3_pool"])


def test_a_survey_of_another_model_layers_or_data_is_refused_in_one_line(model, surveys, tmp_path):
    path, single = surveys
    other = tmp_path / "other.npz"
    save_survey(dataclasses.replace(single, model="vgg16"), other)
    with pytest.raises(KvisError, match=r"^\S+ is a survey of model 'vgg16', not "
                                        r"'kvis_demo'$"):
        build_microscope(model, "demo", tmp_path / "site", layers=list(LAYERS),
                         survey=other, progress=False)
    with pytest.raises(KvisError, match="surveys layers block2_pool, block3_pool, not "
                                        "block3_pool"):
        build_microscope(model, "demo", tmp_path / "site", layers=["block3_pool"],
                         survey=path, progress=False)
    with pytest.raises(KvisError, match=r"surveyed 400 images; .* has 10$"):
        build_microscope(model, np.zeros((10, 28, 28, 1), np.float32), tmp_path / "site",
                         layers=list(LAYERS), survey=path, progress=False)
    with pytest.raises(KvisError, match="pass concepts or a survey, not both$"):
        build_microscope(model, "demo", tmp_path / "site", layers=list(LAYERS), survey=path,
                         concepts=tmp_path, progress=False)
    assert not (tmp_path / "site").exists()
    result = CliRunner().invoke(main, ["microscope", "demo", "demo", "--out",
                                       str(tmp_path / "site"), "--survey", str(other)])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: {other} is a survey of model 'vgg16', not 'kvis_demo'"]
