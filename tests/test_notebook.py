"""A real Jupyter kernel runs examples/notebook.ipynb top to bottom."""

from __future__ import annotations

import os

import pytest
from conftest import ROOT

nbclient = pytest.importorskip("nbclient", reason="needs nbclient and ipykernel (the test extra)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat (the test extra)")
pytest.importorskip("ipykernel", reason="needs ipykernel (the test extra)")

pytestmark = pytest.mark.timeout(180)


def test_the_notebook_runs_top_to_bottom():
    notebook = nbformat.read(os.path.join(ROOT, "examples", "notebook.ipynb"), as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": ROOT}},
    )
    client.execute()  # the kernel inherits the suite's session root
    outputs = [
        "".join(out.get("text", "") for out in cell.get("outputs", []))
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    assert outputs[1].strip() == "[0, 1, 4, 9]"
    assert outputs[2].strip() == "[1, 2, 3]"
    assert outputs[3].strip() == "49"
    assert outputs[4].strip() == "4"
    assert outputs[5].strip().endswith("2470") and "20/20" in outputs[5]  # the bar, then the sum
