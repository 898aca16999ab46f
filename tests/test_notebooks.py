"""Execute every teaching notebook in notebooks/ top to bottom; a failing cell fails the test.

Each notebook runs in a fresh kernel (the ``python3`` kernel of the interpreter running the
tests) with ``notebooks/`` as its working directory, so it must be self-contained. The
notebooks are committed without outputs; nothing is written back. Each must finish within
``NOTEBOOK_BUDGET_S`` seconds (2 minutes on 2 cores, the issue's budget): a slower run is
reported as a warning; ``CELL_TIMEOUT_S`` only guards against a hang.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest

from .conftest import require

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
NOTEBOOK_BUDGET_S = float(os.environ.get("NPGRU_NOTEBOOK_BUDGET_S", "120"))


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    # figures render to PNG without a display; the kernel inherits this environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    assert all(
        not c.get("outputs") for c in nb.cells if c.cell_type == "code"
    ), f"{path.name} is committed with outputs: strip them"
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    elapsed = time.perf_counter() - start
    # an exception while rendering a figure is an "error" output of a cell that still "succeeds"
    rendered = [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not rendered, f"{path.name} produced error outputs: {rendered}"
    # speed is reported, not asserted (timed assertions are flaky on shared machines)
    if elapsed > NOTEBOOK_BUDGET_S:
        warnings.warn(f"{path.name} took {elapsed:.0f} s, over its {NOTEBOOK_BUDGET_S:.0f} s "
                      "budget: use smaller shapes or fewer rounds", stacklevel=1)
