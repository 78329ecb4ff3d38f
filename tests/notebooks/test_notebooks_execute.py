"""Every notebook in notebooks/ executes top to bottom on a fresh kernel, in a private run store.

The notebooks assert their own computed values (e.g. capture's next token), so a notebook that runs but
computes something wrong fails here too. Committed notebooks carry no outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_per_analysis_package() -> None:
    from diag.registry import ANALYSES

    packages = {a.config.__module__.split(".")[1] for a in ANALYSES.values()}  # diag.boundary.config -> boundary
    missing = packages - {path.stem for path in NOTEBOOKS}
    assert not missing, f"analyses without a notebook in notebooks/: {sorted(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, smollm2) -> None:
    committed = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in committed.cells if cell.cell_type == "code"), (
        f"{path.name} was committed with outputs; clear them"
    )
    client = NotebookClient(committed, timeout=240, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    outputs = [out for cell in committed.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), f"{path.name} shows no figure"
