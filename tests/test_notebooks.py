"""Every notebook runs top to bottom on the embedded model, offline, and with another model in its first cell."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
MODEL_CELL = "MODEL = None"


def _run(nb, tmp_path) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def _first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


@pytest.mark.real
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    import nbformat

    _run(nbformat.read(path, as_version=4), tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_another_model(path, tmp_path):
    """The first code cell names the model; put "tiny-llama" there and the whole notebook still runs."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = _first_code_cell(nb)
    assert cell.source.count(MODEL_CELL) == 1, f"{path.name}: the first code cell must set {MODEL_CELL}"
    cell.source = cell.source.replace(MODEL_CELL, 'MODEL = "tiny-llama"')
    _run(nb, tmp_path)
    # it really ran on the tiny model: no cell loaded the embedded one behind our back
    outputs = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "tiny-llama" in outputs
    assert "smollm2" not in outputs.lower()
