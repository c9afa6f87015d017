"""The benchmark runs (on tiny sizes; its timings are never asserted)."""

from __future__ import annotations

from bench import mlp


def test_the_mlp_bench_runs_and_checks_its_numbers() -> None:
    results = mlp.run(repeat=1, sizes=(8, 4, 4, 2), batch=4)
    assert set(results) == {"hand-written NumPy", "engine", "engine compile"}
