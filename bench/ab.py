"""`python -m bench --against REV`: this checkout's server beside another revision's, P1-P4 measured
in one run, the two servers taking turns round by round, and each new/old ratio with its spread.

The other revision is built once per commit: `git archive` into a cache folder, its own venv with
its `server` extra. Only the servers differ: the clients, the bodies and the timing are this
checkout's, so a difference in the table is a difference of the servers.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import memory, mlp, sparse, throughput
from bench.common import Samples, rss_kib
from bench.common import throughput as requests_per_second
from client import Client
from service.launcher import Server, start_server

#: a ratio is a regression when even its best round is this much worse than the other revision
REGRESSION = 1.10
QUIET = {"GRADSERVE_LOG_LEVEL": "warning"}


@dataclass(frozen=True)
class Build:
    """A revision's tree and the python of its venv."""

    name: str
    python: str

    def start(self, env: dict[str, str] | None = None) -> Server:
        # -P: the server imports its own tree's `service`, never the one in the working directory
        return start_server({**QUIET, **(env or {})}, [self.python, "-P", "-m", "service"])


def this_checkout() -> Build:
    return Build("this checkout", sys.executable)


def build(rev: str) -> Build:
    """The revision `rev` of this repository, installed with its server extra in its own venv."""
    top = Path(__file__).resolve().parent.parent
    sha = subprocess.run(
        ["git", "-C", str(top), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    home = Path(tempfile.gettempdir()) / "gradserve-bench" / sha
    python = home / ".venv" / "bin" / "python"
    if not (home / ".built").exists():
        print(f"building {rev} ({sha[:12]}) in {home} ...", flush=True)
        home.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(top), "archive", sha], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(home)], input=archive.stdout, check=True)
        venv.create(home / ".venv", with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"{home}[server]"], check=True)
        (home / ".built").touch()
    return Build(f"{rev} ({sha[:12]})", str(python))


@contextmanager
def running(builds: tuple[Build, Build], env: dict[str, str] | None = None) -> Iterator[list[Server]]:
    servers: list[Server] = []
    try:
        for b in builds:
            servers.append(b.start(env))
        yield servers
    finally:
        for server in servers:
            server.stop()


def alternate(calls: tuple[Callable[[], float], Callable[[], float]], rounds: int) -> tuple[Samples, Samples]:
    """Each call's measurement `rounds` times, the two taking turns (which goes first alternates too)."""
    new: Samples = []
    old: Samples = []
    for k in range(rounds):
        order = [(calls[0], new), (calls[1], old)]
        for call, into in order if k % 2 == 0 else order[::-1]:
            into.append(call())
    return new, old


def per_call(fn: Callable[[], object], repeat: int) -> Callable[[], float]:
    """The median seconds of `repeat` calls of `fn` (after one warm-up call)."""

    def measure() -> float:
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return measure


def p1(builds: tuple[Build, Build], rounds: int, seconds: float) -> tuple[Samples, Samples]:
    """Seconds per request of the chain's gradients under 8 concurrent clients."""
    body = json.dumps(throughput.CHAIN).encode()
    with running(builds) as servers:

        def per_request(url: str) -> Callable[[], float]:
            # no answer at all within the window (a very loaded machine) reads as infinitely slow
            return lambda: 1.0 / max(requests_per_second(url + "/v1/gradients", body, seconds), 1e-9)

        calls = [per_request(s.url) for s in servers]
        return alternate((calls[0], calls[1]), rounds)


def binary_gradients(client: Client, network: Any, samples: Any) -> object:
    return client.gradients(network, samples, include_units=False, array_encoding="binary")


def p2_p3(builds: tuple[Build, Build], rounds: int, tiny: bool) -> dict[str, tuple[Samples, Samples]]:
    """Seconds per round trip through the SDK, binary arrays both ways (client encode to decode)."""
    net = mlp.make_mlp((8, 4, 4, 2), 4) if tiny else mlp.make_mlp()
    dag = sparse.make_dag(levels=3, batch=4) if tiny else sparse.make_dag()
    repeat = 3 if tiny else 10
    mlp_arrays = (net.network(lambda a: a), net.samples(lambda a: a))
    dag_arrays = (dag.network(columns=True), dag.samples())
    with running(builds) as servers:
        clients = [Client(s.url, timeout=120) for s in servers]
        try:
            mlp_calls = [per_call(partial(binary_gradients, c, *mlp_arrays), repeat) for c in clients]
            dag_calls = [per_call(partial(binary_gradients, c, *dag_arrays), repeat) for c in clients]
            return {
                "P2 MLP, binary, end to end (s)": alternate((mlp_calls[0], mlp_calls[1]), rounds),
                "P3 sparse DAG, binary columns (s)": alternate((dag_calls[0], dag_calls[1]), rounds),
            }
        finally:
            for c in clients:
                c.close()


def p4(builds: tuple[Build, Build], rounds: int) -> tuple[Samples, Samples]:
    """Peak extra memory of one binary 32 MiB request / its size; a fresh server each time."""
    body, headers = memory.body_of("binary")

    def peak(b: Build) -> Callable[[], float]:
        def measure() -> float:
            server = b.start({"GRADSERVE_MAX_ACTIVATION_ELEMENTS": str(8_000_000)})
            try:
                idle = rss_kib(server.pid)
                httpx.post(
                    server.url + "/v1/gradients", content=body, headers=headers, timeout=120
                ).raise_for_status()
                return (rss_kib(server.pid, "VmHWM") - idle) * 1024 / len(body)
            finally:
                server.stop()

        return measure

    return alternate((peak(builds[0]), peak(builds[1])), rounds)


def spread(values: Samples) -> str:
    return f"({min(values):.3g}-{max(values):.3g})"


def report(name: str, new: Samples, old: Samples) -> bool:
    """One row: medians, the new/old ratio of the medians and of each round; True if a regression."""
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    ratio = statistics.median(new) / statistics.median(old)
    regressed = min(ratios) > REGRESSION
    flag = "  REGRESSION: every round over 1.10x" if regressed else ""
    print(
        f"  {name:<36} new {statistics.median(new):9.4g} {spread(new):<20}"
        f" old {statistics.median(old):9.4g} {spread(old):<20}"
        f" new/old {ratio:5.2f}x {spread(ratios)}{flag}"
    )
    return regressed


def run(rev: str, rounds: int = 5, tiny: bool = False) -> int:
    """Measure, print the A/B table, and return how many rows regressed."""
    builds = (this_checkout(), build(rev))
    print(f"new: {builds[0].name}; old: {builds[1].name}; {rounds} rounds, taking turns (lower is better)")
    rows: dict[str, tuple[Samples, Samples]] = {
        "P1 chain, seconds per request": p1(builds, rounds, 2.0 if tiny else 3.0)
    }
    rows.update(p2_p3(builds, rounds, tiny))
    if not tiny:
        rows["P4 peak memory / 32 MiB binary body"] = p4(builds, max(1, rounds // 2))
    print()
    regressions = sum(report(name, *values) for name, values in rows.items())
    print(
        f"\n{regressions} regression(s) beyond the spread"
        if regressions
        else "\nno regression beyond the spread"
    )
    return regressions
