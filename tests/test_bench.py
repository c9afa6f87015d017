"""The benchmark runs (on tiny sizes; its timings are never asserted)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest

from bench import mlp, sparse
from bench.__main__ import verdict
from bench.common import load_generator, report


def timings_and_ratios(results: dict[str, list[float]], reference: str) -> dict[str, float]:
    """The checks every run's figures pass: positive finite seconds in every row, and ratios
    to the reference that are positive finite numbers, the reference's own 1.0."""
    for name, seconds in results.items():
        assert seconds, name
        assert all(0.0 < s < math.inf for s in seconds), (name, seconds)
    ratios = report("tiny", results, reference)
    assert ratios[reference] == 1.0
    assert all(0.0 < r < math.inf for r in ratios.values()), ratios
    return ratios


def test_the_mlp_bench_runs_and_checks_its_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    results = mlp.run(repeat=2, sizes=(8, 4, 4, 2), batch=4)
    assert all(len(seconds) == 2 for seconds in results.values())
    ratios = timings_and_ratios(results, "hand-written NumPy")
    assert {"hand-written NumPy", "engine", "engine, compile included"} <= set(ratios)
    # the engine's gradients are checked against the hand-written NumPy's before any timing:
    # a reference off by 0.1% stops the run
    right = mlp.hand_written
    monkeypatch.setattr(mlp, "hand_written", lambda m: [g * 1.001 for g in right(m)])
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        mlp.run(repeat=1, sizes=(8, 4, 4, 2), batch=4)


def test_the_sparse_bench_runs_and_checks_its_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    results = sparse.run(repeat=2, levels=3, batch=4)
    ratios = timings_and_ratios(results, "per-unit NumPy loop")
    assert set(ratios) == {"per-unit NumPy loop", "engine", "engine, compile included"}
    right = sparse.per_unit_loop
    monkeypatch.setattr(sparse, "per_unit_loop", lambda d: ([g * 1.001 for g in right(d)[0]], right(d)[1]))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        sparse.run(repeat=1, levels=3, batch=4)


def test_python_m_bench_tiny() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "P2" in run.stdout
    assert "P3" in run.stdout


def test_the_end_to_end_runs_reach_a_live_server(server_url: str) -> None:
    p2 = mlp.run(repeat=1, sizes=(8, 4, 4, 2), batch=4, url=server_url)
    assert {"end to end, base64 arrays", "end to end, JSON lists"} <= set(p2)
    p3 = sparse.run(repeat=1, levels=3, batch=4, url=server_url)
    assert {"end to end, weight objects", "end to end, weight columns"} <= set(p3)
    timings_and_ratios(p2, "hand-written NumPy")
    timings_and_ratios(p3, "per-unit NumPy loop")


def test_a_missed_target_never_prints_as_the_target() -> None:
    line = verdict("P3 engine / per-unit loop", 0.3334, 1 / 3)
    assert line.endswith("0.3334x  target <= 0.3333x  NOT met")
    assert verdict("P3 engine / per-unit loop", 0.30, 1 / 3).endswith("0.30x  target <= 0.33x  met")
    assert verdict("P1", 1.25, 1 / 0.8).endswith("1.25x  target <= 1.25x  met")


def test_the_p1_title_names_its_load_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "httpx" in load_generator()
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert "hey" in load_generator()
