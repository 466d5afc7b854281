import json
import time
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

from kvis.core import io
from kvis.core.errors import KvisError


@dataclass(frozen=True)
class _Result:
    maps: np.ndarray
    layers: dict
    names: list
    layer: str
    unoccluded: tuple
    values: np.ndarray | None = None


def _result(scale=1.0):
    return _Result(np.arange(6, dtype=np.float32).reshape(1, 2, 3) * scale,
                   {"a/b": np.ones((1, 2), np.float32)}, ["x.png"], "conv",
                   (np.float32(0.5), np.int64(3)))


def test_a_result_is_written_as_named_arrays_and_json_parameters(tmp_path):
    io.write_result(tmp_path / "r.npz", _result(), params={"layer": None, "seed": 0})
    data = np.load(tmp_path / "r.npz", allow_pickle=False)
    assert sorted(data.files) == ["layers/a/b", "maps", "names", "params"]
    np.testing.assert_array_equal(data["maps"], _result().maps)
    assert data["names"].tolist() == ["x.png"] and data["layers/a/b"].shape == (1, 2)
    assert json.loads(str(data["params"])) == {"layer": "conv", "seed": 0,
                                               "unoccluded": [0.5, 3]}


def test_several_results_share_some_fields_and_prefix_the_others(tmp_path):
    io.write_result(tmp_path / "r.npz", {"one": _result(), "two": _result(2.0)},
                    shared=("names",))
    data = np.load(tmp_path / "r.npz", allow_pickle=False)
    assert "names" in data.files and "one/names" not in data.files
    np.testing.assert_array_equal(data["two/maps"], 2 * data["one/maps"])
    assert json.loads(str(data["params"]))["two/layer"] == "conv"


def test_the_same_arrays_give_the_same_bytes_whenever_they_are_written(tmp_path, monkeypatch):
    arrays = {"maps": np.arange(12, dtype=np.float32).reshape(3, 4), "a/b": np.int64(7),
              "params": json.dumps({"seed": 0}), "names": np.array(["x.png", "y.png"])}
    io.write_arrays(tmp_path / "one.npz", arrays)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    io.write_arrays(tmp_path / "two.npz", arrays)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.npz") as archive:
        assert {entry.date_time for entry in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(tmp_path / "one.npz", allow_pickle=False) as found:
        assert found.files == ["maps", "a/b", "params", "names"]
        for name, value in arrays.items():
            np.testing.assert_array_equal(found[name], value)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    io.write_arrays(tmp_path / "r.npz", {"maps": np.zeros(3)})

    def fail(path, **arrays):
        open(path, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(KvisError, match="cannot write .*r.npz: No space left on device"):
        io.write_arrays(tmp_path / "r.npz", {"maps": np.ones(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(tmp_path / "r.npz")["maps"], np.zeros(3))


def test_arrays_that_would_need_pickle_are_refused(tmp_path):
    with pytest.raises(KvisError, match="'boxes' holds Python objects"):
        io.write_arrays(tmp_path / "r.npz", {"boxes": np.array([None, 1], dtype=object)})
    assert not list(tmp_path.iterdir())


def test_checking_a_path_leaves_nothing_and_writing_makes_its_folders(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.png"
    io.check_writable(target)
    assert not list(tmp_path.iterdir())  # a command that fails later leaves no empty folder
    io.write_atomically(target, lambda temporary: open(temporary, "w").write("x"))
    assert target.read_text() == "x"
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(KvisError, match="cannot write .*blocker/x.png"):
        io.check_writable(tmp_path / "blocker" / "x.png")
