"""`python -m bench.p1 [--against REV ...]`: P1, the seed's chain, served by this checkout, by each
revision REV (built as `python -m bench --against` builds it), by a bare FastAPI endpoint that
only validates the body (bench.bare), and by FastAPI with torch computing the same gradients
(bench.torch_service, when torch is installed): `hey -z Ns -c 16` against each in turn, in
interleaved rounds. Each round prints requests per second and the ratio to the bare endpoint
measured in that round, and the server's CPU time per request (its processes together), which
a loaded machine disturbs less than a rate."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys

from bench import ab, throughput
from bench.common import cpu_seconds, hey
from service.launcher import Server, start_server

CONCURRENCY = 16
UVICORN_AS_IT_COMES = [
    sys.executable, "-m", "uvicorn", "service.http.app:create_app", "--factory",
    "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p1")
    parser.add_argument("--against", action="append", default=[], help="a git revision (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--features",
        action="store_true",
        help="also this checkout without its metrics, and without the edge protocol (uvicorn's own)",
    )
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("python -m bench.p1 needs hey (Debian's package)")
    body = json.dumps(throughput.CHAIN).encode()
    quiet = {"GRADSERVE_LOG_LEVEL": "warning"}
    starts = {"gradserve, this checkout": lambda: start_server(quiet)}
    if args.features:
        starts["  without metrics (GRADSERVE_METRICS=false)"] = lambda: start_server(
            {**quiet, "GRADSERVE_METRICS": "false"}
        )
        # the app served by uvicorn as it comes: its httptools protocol, none of the edge's guards
        starts["  without the edge protocol"] = lambda: start_server(quiet, UVICORN_AS_IT_COMES)
    for rev in args.against:
        built = ab.build(rev)
        starts[f"gradserve at {rev}"] = lambda built=built: built.start(quiet)  # type: ignore[misc]
    starts["bare FastAPI endpoint"] = lambda: start_server({}, [sys.executable, "-m", "bench.bare"])
    if importlib.util.find_spec("torch") is not None:
        starts["FastAPI + torch float64"] = lambda: start_server(
            {}, [sys.executable, "-m", "bench.torch_service"]
        )
    servers: dict[str, Server] = {}
    try:
        for name, start in starts.items():
            servers[name] = start()
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for server in servers.values():  # warm up
            hey(server.url + "/v1/gradients", body, 1.0, CONCURRENCY)
        for k in range(args.rounds):
            order = list(servers.items())
            for name, server in order if k % 2 == 0 else order[::-1]:
                before = cpu_seconds(server.pid)
                rate, ok = hey(server.url + "/v1/gradients", body, args.seconds, CONCURRENCY)
                rates[name].append(rate)
                cpu[name].append((cpu_seconds(server.pid) - before) / max(ok, 1) * 1e6)
    finally:
        for server in servers.values():
            server.stop()
    bare = rates["bare FastAPI endpoint"]
    print(
        f"P1 the seed's chain: hey -z {args.seconds:g}s -c {CONCURRENCY}, "
        f"{args.rounds} interleaved rounds, {os.cpu_count()} cores"
    )
    columns = f"{'req/s, round by round':<28} {'vs bare, round by round':<26}"
    print(f"  {'server':<40} {columns} server CPU per request")
    for name in servers:
        ratios = [r / b for r, b in zip(rates[name], bare, strict=True)]
        print(
            f"  {name:<40} {', '.join(f'{r:,.0f}' for r in rates[name]):<28} "
            f"{', '.join(f'{x:.2f}x' for x in ratios):<26} {statistics.median(cpu[name]):,.0f} us"
        )


if __name__ == "__main__":
    main()
