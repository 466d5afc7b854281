"""The README's compatibility matrix: what scripts/compatibility.py recorded, all passing, and
every architecture run again through the techniques most tied to its graph."""

import json
from pathlib import Path

import pytest
from helpers import compatibility_matrix

ROOT = Path(__file__).parents[1]
matrix = compatibility_matrix()

# The cells that depend most on the graph's layer kinds: the walk over every node, the
# explicit deconvnet's backward rules, the replayed forward of the scan and top-9, and a
# gradient through the whole model.
GRAPH_CELLS = ("layer table", "deconvnet", "scan + top-9", "grad-cam")
# Deeper stacks of the blocks of a row tested in full: their graph walk only, to keep the
# suite within its time.
DEEPER = {"ResNet101": "ResNet50", "ResNet152": "ResNet50", "ResNet101V2": "ResNet50V2",
          "ResNet152V2": "ResNet50V2"}


def test_the_readme_shows_the_recorded_matrix_and_every_cell_passes():
    recorded = json.loads((ROOT / "docs" / "compatibility.json").read_text(encoding="utf-8"))
    assert list(recorded) == list(matrix.ARCHITECTURES)
    for name, cells in recorded.items():
        assert list(cells) == list(matrix.TECHNIQUES), name
        assert {t: why for t, why in cells.items() if why} == {}, name
    table = matrix.markdown({name: {t: (why, 0) for t, why in cells.items()}
                             for name, cells in recorded.items()})
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert matrix.replace_table(ROOT / "README.md", table) == readme
    assert table in readme


@pytest.mark.integration
@pytest.mark.parametrize("name", list(matrix.ARCHITECTURES))
def test_every_architecture_runs_the_graph_cells(name):
    cells = matrix.run_row(name, {t: matrix.TECHNIQUES[t]
                                  for t in (["layer table"] if name in DEEPER else GRAPH_CELLS)})
    assert {t: why for t, (why, _) in cells.items() if why} == {}
