"""`python -m bench.hop`: P2 with binary arrays end to end (the client's encoding and decoding
included), computed in a worker process (GRADSERVE_ISOLATION=process, the default) and in a
thread of the server (=thread), beside the floor (raw bytes over HTTP to hand-written NumPy on
the event loop, bench.floor) and beside hand-written NumPy alone plus an echo of the request's
bytes over HTTP. The calls take turns (bench.common.timed); each line a median (min-max)."""

from __future__ import annotations

import argparse
import statistics

import httpx

from bench import floor
from bench.common import timed
from bench.mlp import AS_A_WORKER, make_mlp, numpy_user
from client import Client
from service.launcher import start_server
from service.transport.executors import tune_for_requests


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hop")
    parser.add_argument("--repeat", type=int, default=50, help="calls of each, taking turns")
    parser.add_argument("--tiny", action="store_true", help="an MLP 8-4-4-2, batch 4: only to check it runs")
    args = parser.parse_args()
    tune_for_requests()  # NumPy alone measured with a worker's BLAS threads
    mlp = make_mlp((8, 4, 4, 2), 4) if args.tiny else make_mlp()
    quiet = {"GRADSERVE_LOG_LEVEL": "warning"}
    servers = {
        "process": start_server({**quiet, "GRADSERVE_ISOLATION": "process"}),
        "thread": start_server({**quiet, "GRADSERVE_ISOLATION": "thread"}),
        "floor": start_server(AS_A_WORKER, floor.command(mlp)),
    }
    body = floor.pack(mlp)
    try:
        with (
            Client(servers["process"].url) as in_process,
            Client(servers["thread"].url) as in_thread,
            httpx.Client(timeout=60) as http,
        ):
            times = timed(
                {
                    FLOOR: lambda: floor.post(http, servers["floor"].url, mlp),
                    NUMPY: lambda: floor.hand_written(mlp),
                    ECHO: lambda: http.post(servers["floor"].url + "/echo", content=body).content,
                    "gradserve, a worker process (isolation=process)": numpy_user(in_process, "binary", mlp),
                    "gradserve, a thread (isolation=thread)": numpy_user(in_thread, "binary", mlp),
                },
                args.repeat,
            )
    finally:
        for server in servers.values():
            server.stop()
    med = {name: statistics.median(samples) for name, samples in times.items()}
    numpy_echo = med[NUMPY] + med[ECHO]
    print(f"P2 binary end to end, {args.repeat} calls of each, taking turns: ms, / floor, / (NumPy + echo)")
    for name, samples in times.items():
        spread = f"({min(samples) * 1e3:.2f}-{max(samples) * 1e3:.2f})"
        print(
            f"  {name:<50} {med[name] * 1e3:8.2f} {spread:<16} {med[name] / med[FLOOR]:6.2f}x "
            f"{med[name] / numpy_echo:6.2f}x"
        )


FLOOR = "floor: raw bytes over HTTP + NumPy on the loop"
NUMPY = "hand-written NumPy alone"
ECHO = "an echo of the request's bytes over HTTP"


if __name__ == "__main__":
    main()
