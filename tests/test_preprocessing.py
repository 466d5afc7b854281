import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import nested_functional, tiny_base, tiny_cnn

from kvis.cli import main
from kvis.core.errors import KvisError
from kvis.core.models import configure_model, preprocessing_for
from kvis.core.preprocessing import PREPROCESSING, affine, parse

PIXELS = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_presets_equal_keras_preprocess_input(mode):
    expected = keras.applications.imagenet_utils.preprocess_input(
        PIXELS.astype(np.float32), mode=mode)
    np.testing.assert_allclose(PREPROCESSING[mode](PIXELS), expected, rtol=1e-6, atol=1e-5)


def test_affine_is_the_formula_it_is_given():
    np.testing.assert_allclose(affine(mean=127, std=128)(PIXELS), (PIXELS - 127.0) / 128.0,
                               rtol=1e-6)
    bgr = affine(mean=(1, 2, 3), std=(4, 5, 6), scale=0.5, bgr=True)(PIXELS)
    np.testing.assert_allclose(bgr, (PIXELS[..., ::-1] * 0.5 - [1, 2, 3]) / [4, 5, 6], rtol=1e-6)


def test_a_spelling_gives_the_same_map_as_keras_torch_mode_and_reads_back():
    spec = "affine:mean=123.675/116.28/103.53, std=58.395/57.12/57.375"
    torch = keras.applications.imagenet_utils.preprocess_input(PIXELS.astype(np.float32),
                                                               mode="torch")
    np.testing.assert_allclose(parse(spec)(PIXELS), torch, rtol=1e-5, atol=1e-5)
    fraction = parse("affine:scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225")
    np.testing.assert_allclose(fraction(PIXELS), torch, rtol=1e-5, atol=1e-5)
    for given in (spec, "affine:mean=127,std=128,bgr", "affine:scale=1/255", "tf"):
        assert parse(parse(given).name) == parse(given)
    assert parse("affine:mean=127,std=128").name == "affine:mean=127,std=128"
    assert parse({"mean": 127, "std": 128}) == affine(mean=127, std=128)


@pytest.mark.parametrize("spec", [*PREPROCESSING, "affine:mean=127,std=128",
                                  "affine:mean=123.7/116.3/103.5,std=58.4/57.1/57.4,bgr",
                                  "affine:scale=-0.01,mean=3,std=-2"])
def test_every_preprocessing_inverts_exactly(spec):
    np.testing.assert_allclose(parse(spec).invert(parse(spec)(PIXELS)), PIXELS, atol=2e-3)


@pytest.mark.parametrize("spec, message", [
    ("affine:mean=127,std=0", "preprocessing std must not be zero"),
    ("affine:std=1/0/1", "preprocessing std must not be zero"),
    ("affine:scale=1/0", "scale 1/0 divides by zero"),
    ("affine:mean=1/2,std=1/2/3", "has 2 means and 3 stds"),
    ("affine:mean=127,sigma=128", "unknown key 'sigma'; keys: scale, mean, std, bgr"),
    ("affine:mean=abc", "'abc' is not a number"),
    ("affine:bgr=yes", "bgr is a flag"),
    ("affine:mean=nan", "mean must be finite numbers"),
    ({"mean": 127, "stdev": 1}, "unknown key 'stdev'"),
    ("caffee", "unknown preprocessing 'caffee'; choose from caffe, tf, torch, unit, none, or "
               "affine:mean=M,std=S"),
])
def test_a_bad_preprocessing_is_one_line(spec, message):
    with pytest.raises(KvisError, match=message) as error:
        parse(spec)
    assert "\n" not in str(error.value)


def test_configure_model_takes_a_custom_map_for_the_model_s_channels():
    model = configure_model(tiny_cnn(), preprocessing="affine:mean=127,std=128")
    np.testing.assert_allclose(preprocessing_for(model)(PIXELS), (PIXELS - 127.0) / 128.0,
                               rtol=1e-6)
    configure_model(model, preprocessing=affine(mean=(1, 2, 3), std=2))
    assert preprocessing_for(model).mean == (1.0, 2.0, 3.0)
    with pytest.raises(KvisError, match=r"^preprocessing 'affine:mean=1/2,std=1' is written "
                                        r"for 2 channels; model 'tiny' takes 3$"):
        configure_model(model, preprocessing={"mean": [1, 2]})
    gray = keras.Model(inputs := keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)(inputs),
                       name="gray")
    with pytest.raises(KvisError, match="'caffe' is written for 3 channels; model 'gray' takes 1"):
        configure_model(gray, preprocessing="caffe")
    assert preprocessing_for(configure_model(gray, preprocessing="tf")).name == "tf"


def test_the_cli_takes_a_custom_map_and_refuses_a_bad_one_in_one_line(tmp_path):
    nested_functional(tiny_base()).save(tmp_path / "mine.keras")
    cv2.imwrite(str(tmp_path / "x.png"), np.full((16, 16, 3), 9, np.uint8))
    args = ["features", str(tmp_path / "mine.keras"), str(tmp_path / "x.png"), "--layer",
            "base/conv2", "--out", str(tmp_path / "m.png"), "--preprocess"]
    result = CliRunner().invoke(main, [*args, "affine:mean=127,std=128"])
    assert result.exit_code == 0, result.output
    for spec, code, message in (("affine:mean=127,std=0", 2, "std must not be zero"),
                                ("affine:mean=1/2/3/4", 1, "written for 4 channels")):
        result = CliRunner().invoke(main, [*args, spec])
        lines = result.output.strip().splitlines()
        assert result.exit_code == code and len(lines) == 1 and message in lines[0], result.output
