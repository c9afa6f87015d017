"""The benchmark runs (on tiny sizes; its timings are never asserted)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys

import httpx
import pytest

from bench import ab, floor, memory, mlp, sparse
from bench.__main__ import verdict
from bench.common import load_generator, report
from tests.servers import Serve


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
    assert set(ratios) == {
        "per-unit NumPy loop",
        "engine",
        "engine, compile included",
        "engine, compile included, structure seen before",
    }
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
    assert {
        mlp.FLOOR,
        "end to end, binary arrays",
        "end to end, base64 arrays",
        "end to end, JSON lists",
    } <= set(p2)
    p3 = sparse.run(repeat=1, levels=3, batch=4, url=server_url)
    assert {
        "end to end, weight objects",
        "end to end, weight columns",
        "end to end, weight columns, base64",
        "end to end, weight columns, binary",
    } <= set(p3)
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


def test_the_floor_answers_the_hand_written_gradients(serve: Serve) -> None:
    """The floor's app runs the same NumPy as the reference and answers in gradserve's order."""
    sizes, batch = (6, 5, 3), 4
    case = mlp.make_mlp(sizes, batch, seed=3)
    server = serve({}, [sys.executable, "-m", "bench.floor", "--sizes", "6,5,3", "--batch", "4"])
    answer = httpx.post(server.url + "/", content=floor.pack(case)).raise_for_status().content
    got = floor.unpack(answer, floor.answer_layout(sizes))
    grads = mlp.hand_written(case)  # from the last layer back: weight, bias, weight, bias
    assert [g.tolist() for g in got] == [g.tolist() for g in (grads[2], grads[0], grads[3], grads[1])]
    with pytest.raises(ValueError, match="holds"):
        floor.unpack(answer + bytes(8), floor.answer_layout(sizes))


def test_the_breakdown_and_the_servers_cpu_time_are_measured(serve: Serve) -> None:
    case = mlp.make_mlp((8, 4, 4, 2), 4)
    pieces = mlp.breakdown(case, repeat=1)
    assert len(pieces) == 5
    assert all(t > 0 for times in pieces.values() for t in times)
    server = serve({"GRADSERVE_LOG_LEVEL": "warning"})
    cpu = mlp.server_cpu(case, server.url, server.pid, rounds=1, per_round=2)
    assert set(cpu) == {"binary", "base64"}
    assert all(ms >= 0 for ms in cpu.values())


@pytest.mark.parametrize("form", ["binary", "base64", "lists"])
def test_p4_bodies_are_what_the_server_takes(http: httpx.Client, form: str) -> None:
    body, headers = memory.body_of(form, target=200_000)
    assert len(body) <= 32 * 2**20
    assert headers["content-type"] == ("application/octet-stream" if form == "binary" else "application/json")
    answer = http.post("/v1/gradients", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["loss"] > 0


def test_the_ab_mode_takes_turns_and_flags_a_regression_only_beyond_every_round() -> None:
    seen: list[str] = []
    new, old = ab.alternate((lambda: seen.append("new") or 2.0, lambda: seen.append("old") or 1.0), 3)
    assert seen == ["new", "old", "old", "new", "new", "old"]  # who goes first alternates too
    assert (new, old) == ([2.0] * 3, [1.0] * 3)
    assert ab.report("slower in every round", [1.3, 1.2], [1.0, 1.0])
    assert not ab.report("slower in one round only", [1.3, 1.05], [1.0, 1.0])
    assert not ab.report("faster", [0.5, 0.6], [1.0, 1.0])


@pytest.mark.slow
def test_python_m_bench_against_a_revision_builds_it_and_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--against", "HEAD", "--tiny", "--rounds", "1"],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    for row in ("P1 chain", "P2 MLP", "P3 sparse DAG"):
        assert row in out, out
    assert "new/old" in out


def test_each_hot_path_feature_s_cost_is_measured_in_process() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.stack", "-n", "5", "--rounds", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for variant in ("every feature", "metrics", "RequestContext", "SendTimeout", "outer pair", "bare"):
        assert variant in run.stdout, run.stdout


@pytest.mark.slow
def test_the_worker_hop_bench_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.hop", "--tiny", "--repeat", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "isolation=process" in run.stdout
    assert "isolation=thread" in run.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("hey") is None, reason="bench.p1 drives hey (Debian's package)")
def test_the_p1_table_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.p1", "--seconds", "0.5", "--rounds", "1", "--features"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "bare FastAPI endpoint" in run.stdout
    assert "without the edge protocol" in run.stdout


def test_a_request_s_walk_through_the_modules_is_counted() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.walk", "gradients"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"gradients: \d+ stops, \d+ modules, \d+ returns to a module already left", last)
    assert "-> http.routes" in run.stdout
    assert "-> pipeline.dispatch" in run.stdout
