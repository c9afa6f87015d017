"""The benchmark runs (on tiny sizes; its timings are never asserted)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from bench import mlp, sparse
from bench.__main__ import verdict
from bench.common import load_generator


def test_the_mlp_bench_runs_and_checks_its_numbers() -> None:
    results = mlp.run(repeat=1, sizes=(8, 4, 4, 2), batch=4)
    assert {"hand-written NumPy", "engine", "engine, compile included"} <= set(results)


def test_the_sparse_bench_runs_and_checks_its_numbers() -> None:
    results = sparse.run(repeat=1, levels=3, batch=4)
    assert set(results) == {"per-unit NumPy loop", "engine", "engine, compile included"}


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
