import gzip
import warnings
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from kvis.core import demo as kvis_demo
from kvis.core.errors import KvisError
from kvis.core.images import load_image, read_image
from kvis.core.models import configure_model
from kvis.dataset.sources import IDX_IMAGES, IDX_LABELS, image_source


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pixels[..., ::-1] if pixels.shape[-1] == 3 else pixels)


def make_folder(root, relative_paths, size=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    for name in relative_paths:
        write_png(root / name, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def write_idx(path, array, magic, gz=False):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def scan(source, model, **options):
    batches = list(source.batches(model, **options))
    ids = np.concatenate([b.ids for b in batches])
    return batches, ids, np.concatenate([b.x for b in batches])


@pytest.fixture
def unit(tiny):
    return configure_model(tiny, preprocessing="unit")


def test_class_folders_label_like_keras(tmp_path, unit):
    names = ["dog/2.png", "dog/1.jpg", "cat/x/deep.png", "cat/a.png", "cat-b/0.png",
             "bird/9.png", "bird/10.png"]
    make_folder(tmp_path, names)
    (tmp_path / "zebra").mkdir()  # an empty class is still a class, as in Keras
    (tmp_path / "notes.txt").write_text("not an image")
    source = image_source(tmp_path)
    keras_ds = keras.utils.image_dataset_from_directory(
        tmp_path, shuffle=False, batch_size=None, image_size=(16, 16), verbose=False)
    keras_labels = {Path(path).relative_to(tmp_path).as_posix(): int(label)
                    for path, (_, label) in zip(keras_ds.file_paths, keras_ds)}
    assert source.class_names == keras_ds.class_names == ["bird", "cat", "cat-b", "dog", "zebra"]
    assert dict(zip(source.names, source.labels.tolist())) == keras_labels
    assert source.names == ["bird/10.png", "bird/9.png", "cat/a.png", "cat/x/deep.png",
                            "cat-b/0.png", "dog/1.jpg", "dog/2.png"]
    assert source.labels.dtype == np.int64 and len(source) == 7
    assert source.description == f"folder {tmp_path} (7 files, 5 classes)"


def test_nested_folder_reads_every_image_like_load_image(tmp_path, unit):
    names = ["top.png", "b/1.png", "a/deeper/2.png", "a/3.png"]
    make_folder(tmp_path, names)
    source = image_source(tmp_path)
    assert source.labels is None and source.class_names is None
    assert source.names == ["a/3.png", "a/deeper/2.png", "b/1.png", "top.png"]
    batches, ids, x = scan(source, unit, batch_size=3)
    assert [b.ids.tolist() for b in batches] == [[0, 1, 2], [3]]
    expected = np.concatenate([load_image(tmp_path / name, unit).x for name in source.names])
    np.testing.assert_array_equal(x, expected)
    assert x.dtype == np.float32


def test_unreadable_files_are_skipped_and_listed(tmp_path, unit):
    make_folder(tmp_path, [f"{i}.png" for i in range(6)])
    good = (tmp_path / "0.png").read_bytes()
    (tmp_path / "2.png").write_bytes(good[:len(good) // 3])  # truncated PNG
    (tmp_path / "4.png").write_text("a text file named .png")
    batches, ids, x = scan(image_source(tmp_path), unit, batch_size=4)
    assert ids.tolist() == [0, 1, 3, 5]
    skipped = [entry for b in batches for entry in b.skipped]
    assert [(i, name) for i, name, _ in skipped] == [(2, "2.png"), (4, "4.png")]
    assert all("cannot read image" in reason for _, _, reason in skipped)
    expected = np.concatenate([load_image(tmp_path / f"{i}.png", unit).x for i in (0, 1, 3, 5)])
    np.testing.assert_array_equal(x, expected)


def test_corrupt_files_are_counted_in_one_warning_and_opencv_stays_quiet(tmp_path, unit,
                                                                         capfd):
    from kvis.dataset.scan import scan as scan_dataset

    make_folder(tmp_path, [f"{i}.png" for i in range(5)])
    (tmp_path / "1.bmp").write_bytes(b"BM" + bytes(60))  # OpenCV logs "[ERROR:0@...] imread_"
    cv2.imwrite(str(tmp_path / "3.tif"), np.zeros((32, 32, 3), np.uint8))
    tiff = (tmp_path / "3.tif").read_bytes()
    (tmp_path / "3.tif").write_bytes(tiff[:len(tiff) // 2])  # "[ERROR:...] TIFF_Error"
    level = cv2.utils.logging.getLogLevel()
    with pytest.warns(UserWarning, match=r"skipped 2 of 7 images that could not be read: 1\.bmp "
                                         r"\(cannot read image .*\); 3\.tif \("):
        found = scan_dataset(unit, tmp_path, "conv2", count=2, progress=False)
    with pytest.raises(KvisError, match="cannot read image"):
        load_image(tmp_path / "1.bmp", unit)
    printed = capfd.readouterr().err
    assert "[ WARN" not in printed and "[ERROR" not in printed, printed
    assert cv2.utils.logging.getLogLevel() == level  # the caller's level is back
    assert found.images == 5 and [name for _, name, _ in found.skipped] == ["1.bmp", "3.tif"]


def test_a_batch_of_only_bad_files_still_comes_empty(tmp_path, unit):
    make_folder(tmp_path, ["0.png", "1.png", "2.png"])
    (tmp_path / "0.png").write_text("bad")
    (tmp_path / "1.png").write_text("bad")
    batches = list(image_source(tmp_path).batches(unit, batch_size=2))
    assert batches[0].ids.tolist() == [] and batches[0].x.shape == (0, 16, 16, 3)
    assert [i for i, _, _ in batches[0].skipped] == [0, 1]
    assert batches[1].ids.tolist() == [2]


def test_start_skips_whole_batches_without_reading_them(tmp_path, unit):
    make_folder(tmp_path, [f"{i:02d}.png" for i in range(11)])
    source = image_source(tmp_path)
    _, all_ids, all_x = scan(source, unit, batch_size=3)
    for name in source.names[:6]:  # the files of the first two batches disappear
        (tmp_path / name).unlink()
    batches, ids, x = scan(source, unit, batch_size=3, start=2)
    assert not any(b.skipped for b in batches)
    assert ids.tolist() == list(range(6, 11))
    np.testing.assert_array_equal(x, all_x[6:])
    assert list(source.batches(unit, batch_size=3, start=4)) == []


def test_pixels_of_ids_equal_load_image(tmp_path, unit):
    make_folder(tmp_path, [f"{i}.png" for i in range(5)], size=(20, 12))
    source = image_source(tmp_path)
    ids = [4, 0, 4, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.stack([load_image(tmp_path / f"{i}.png", unit).pixels for i in ids])
        pixels = source.pixels(unit, ids)
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(pixels, expected)
    with pytest.raises(KvisError, match="image id 5 is out of range"):
        source.pixels(unit, [5])


def test_resizing_is_one_summary_warning_per_source(tmp_path, unit):
    make_folder(tmp_path, [f"{i}.png" for i in range(6)], size=(20, 12))
    write_png(tmp_path / "gray.png", np.full((16, 16), 9, np.uint8))
    source = image_source(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, x = scan(source, unit, batch_size=4)
        source.pixels(unit, [0, 1])  # the figures' pixels: the scan has said what changed,
        image_source(tmp_path).pixels(unit, [2])  # also for a new source per layer's figure
    messages = sorted(str(w.message) for w in caught)
    assert messages == [f"{source.description}: converted 1 images to RGB for a 3-channel model",
                        f"{source.description}: resized 6 images to 16x16 (height x width)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.concatenate([load_image(tmp_path / name, unit).x for name in source.names])
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, demo, gz):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (70, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 70).astype(np.uint8)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    suffix = ".gz" if gz else ""
    path = write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, IDX_IMAGES, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels, IDX_LABELS, gz)
    source = image_source(path)
    assert len(source) == 70 and source.names[17] == "image 17"
    np.testing.assert_array_equal(source.labels, labels)
    assert source.labels.dtype == np.int64
    assert source.class_names == list(kvis_demo.CLASS_NAMES)
    assert isinstance(source._reader.stored, np.memmap) != gz  # plain files are memory-mapped
    np.testing.assert_array_equal(source.pixels(demo, [69, 3]), images[[69, 3], ..., None])
    batches, ids, x = scan(source, demo, batch_size=32, start=1)
    assert [len(b.ids) for b in batches] == [32, 6] and ids.tolist() == list(range(32, 70))
    np.testing.assert_allclose(x, images[32:, ..., None] / np.float32(255), rtol=1e-6)


def test_idx_images_are_fitted_to_the_model(tmp_path, unit):
    images = np.random.default_rng(4).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", images, IDX_IMAGES)
    source = image_source(path)
    assert source.labels is None and source.class_names is None
    with pytest.warns(UserWarning) as caught:
        _, _, x = scan(source, unit, batch_size=2)
    assert sorted(str(w.message).split(": ")[1] for w in caught) == [
        "converted 5 images to RGB for a 3-channel model",
        "resized 5 images to 16x16 (height x width)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.stack([read_image(image, size=(16, 16)) for image in images])
    np.testing.assert_array_equal(source.pixels(unit, range(5)), expected)
    np.testing.assert_allclose(x, expected / np.float32(255), rtol=1e-6)


def test_mnist_labels_get_digit_names(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    path = write_idx(tmp_path / "mnist-images.idx3-ubyte", images, IDX_IMAGES)
    write_idx(tmp_path / "mnist-labels.idx1-ubyte.gz", np.array([7, 0, 9]), IDX_LABELS, True)
    source = image_source(path)
    assert source.labels.tolist() == [7, 0, 9]
    assert source.class_names == [str(d) for d in range(10)]


def test_demo_source(demo):
    images, labels = kvis_demo.demo_images()
    source = image_source("demo")
    assert len(source) == 400 == len(images)
    np.testing.assert_array_equal(source.labels, labels)
    assert source.class_names == list(kvis_demo.CLASS_NAMES)
    batches, ids, x = scan(source, demo, batch_size=64)
    assert len(batches) == 7 and ids.tolist() == list(range(400))
    np.testing.assert_allclose(x, images / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(source.pixels(demo, [399, 0]), images[[399, 0]])


def test_arrays_and_datasets_give_the_same_batches(unit):
    x = np.random.default_rng(5).uniform(0, 1, (23, 16, 16, 3)).astype(np.float32)
    labels = np.arange(23) % 3
    sources = {
        "array": image_source(x, labels=labels),
        "images": image_source(tf.data.Dataset.from_tensor_slices(x)),
        "batches": image_source(tf.data.Dataset.from_tensor_slices(x).batch(7)),
        "pairs": image_source(tf.data.Dataset.from_tensor_slices((x, labels)).batch(4),
                              labels=labels),
    }
    for kind, source in sources.items():
        batches, ids, found = scan(source, unit, batch_size=5, start=1)
        assert [b.ids.tolist() for b in batches] == [list(range(i, min(i + 5, 23)))
                                                     for i in range(5, 23, 5)], kind
        np.testing.assert_array_equal(found, x[5:], err_msg=kind)
        np.testing.assert_array_equal(source.pixels(unit, [22, 1, 22]),
                                      np.round(x[[22, 1, 22]] * 255).astype(np.uint8), kind)
    assert sources["array"].labels.tolist() == labels.tolist()
    assert sources["images"].labels is None and len(sources["images"]) == 23
    assert sources["pairs"].labels.tolist() == labels.tolist() and len(sources["pairs"]) == 23
    assert sources["batches"].names is None
    with pytest.raises(KvisError, match="no known length"):
        len(sources["batches"])


def test_array_pixels_are_stretched_where_preprocessing_is_unknown(tiny):
    x = np.random.default_rng(6).uniform(-3, 5, (2, 16, 16, 3)).astype(np.float32)
    pixels = image_source(x).pixels(tiny, [1])
    stretched = 255 * (x[1] - x[1].min()) / (x[1].max() - x[1].min())
    np.testing.assert_array_equal(pixels[0], np.round(stretched).astype(np.uint8))


def test_a_dataset_that_breaks_its_labels_count_is_refused(unit):
    x = np.zeros((6, 16, 16, 3), np.float32)
    source = image_source(tf.data.Dataset.from_tensor_slices(x).batch(4), labels=[0] * 5)
    with pytest.raises(KvisError, match="yields more images than its 5 labels"):
        list(source.batches(unit))


def test_errors_are_one_clear_line(tmp_path, unit):
    with pytest.raises(KvisError, match="dataset not found"):
        image_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KvisError, match="is empty"):
        image_source(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    with pytest.raises(KvisError, match="no image files"):
        image_source(tmp_path / "texts")
    labels = write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(4), IDX_LABELS)
    with pytest.raises(KvisError, match=r"not an IDX images file \(magic number 0x00000801"):
        image_source(labels)
    (tmp_path / "notes.gz").write_bytes(gzip.compress(b"hi"))
    with pytest.raises(KvisError, match=r"magic number none"):
        image_source(tmp_path / "notes.gz")
    images = write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((3, 4, 4)), IDX_IMAGES)
    with pytest.raises(KvisError, match="4 labels for the 3 images"):
        image_source(images)
    truncated = tmp_path / "cut-images-idx3-ubyte"
    truncated.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(KvisError, match="truncated"):
        image_source(truncated)
    with pytest.raises(KvisError, match="2 labels given for the 3 images"):
        image_source(np.zeros((3, 16, 16, 3)), labels=[0, 1])
    with pytest.raises(KvisError, match="got list"):
        image_source([1, 2])
    with pytest.raises(KvisError, match="infinite"):
        image_source(tf.data.Dataset.from_tensor_slices(np.zeros((2, 4, 4, 3))).repeat())
    with pytest.raises(KvisError, match="do not fit the model input"):
        list(image_source(np.zeros((3, 8, 8, 3))).batches(unit))
    with pytest.raises(KvisError, match="batch_size must be at least 1"):
        image_source("demo").batches(unit, batch_size=0)


@pytest.mark.slow
def test_a_program_that_stops_reading_early_still_exits(tmp_path):
    import subprocess
    import sys

    make_folder(tmp_path / "photos", [f"{i:03d}.png" for i in range(200)])
    code = ("import kvis\nfrom kvis.dataset.sources import image_source\n"
            "model = kvis.configure_model(kvis.load_model('demo'), preprocessing='unit')\n"
            f"batches = image_source({str(tmp_path / 'photos')!r}).batches(model, batch_size=4)\n"
            "next(batches)\nprint('read one batch')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env={**__import__("os").environ,
                                              "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0 and "read one batch" in result.stdout, result.stderr[-2000:]
