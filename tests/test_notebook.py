"""The SDK in Jupyter: answers that show themselves, and examples/notebook.ipynb executed as
Jupyter would (nbclient and an IPython kernel) against a live server."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from client import Client
from client.display import Explanation, Svg, Training, loss_curve
from tests import seed

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_answers_show_as_a_picture_typeset_formulas_and_a_loss_curve(server_url: str) -> None:
    case = seed.two_outputs()
    with Client(server_url) as gs:
        drawing = gs.render(case.network, case.samples)
        why = gs.explain(case.network, case.samples)
        trained = gs.sgd(case.network, case.samples, learning_rate=0.5, epochs=4)
        streamed = gs.sgd(case.network, case.samples, learning_rate=0.5, epochs=4, progress=lambda p: None)
        dot = gs.render(case.network, format="dot")
    assert isinstance(drawing, Svg)
    assert drawing._repr_svg_() == str(drawing)
    assert drawing.lstrip().startswith("<svg") or drawing.lstrip().startswith("<?xml")
    assert not hasattr(dot, "_repr_svg_")  # Graphviz text is no picture
    assert isinstance(why, Explanation)
    shown = why._repr_html_()
    assert shown.count("<math") == len(why.weights)
    assert "mfrac" in shown
    for result in (trained, streamed):
        assert isinstance(result, Training)
        curve = result._repr_svg_()
        assert curve.startswith("<svg")
        assert "<polyline" in curve
        points = curve.split('points="')[1].split('"')[0].split()
        assert len(points) == 1 + len(result.history)  # the loss before, then each epoch's


def test_the_loss_curve_falls_as_the_loss_does() -> None:
    curve = loss_curve([1.0, 0.5, 0.25])
    ys = [float(p.split(",")[1]) for p in curve.split('points="')[1].split('"')[0].split()]
    assert ys[0] < ys[1] < ys[2]  # SVG's y grows downwards: a falling loss draws downwards
    assert "log scale" not in curve
    assert "log scale" in loss_curve([1.0, 1e-3])


@pytest.mark.slow
def test_the_example_notebook_runs_and_shows_its_answers(server_url: str, tmp_path: Path) -> None:
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work)
    notebook = nbformat.read(work / "notebook.ipynb", as_version=4)
    os.environ["GRADSERVE_URL"] = server_url  # the kernel inherits it
    try:
        NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}}
        ).execute()
    finally:
        del os.environ["GRADSERVE_URL"]
    shown = [o.get("data", {}) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("<math" in d.get("text/html", "") for d in shown), json.dumps(shown)[:500]
    svgs = [d["image/svg+xml"] for d in shown if "image/svg+xml" in d]
    assert len(svgs) == 2
    assert any("<polyline" in s for s in svgs)
