"""`python -m bench.hop`: P2 with binary arrays end to end (the client's encoding and decoding
included), computed in a worker process (GRADSERVE_ISOLATION=process, the default) and in a
thread of the server (=thread), beside the floor (raw bytes over HTTP to hand-written NumPy on
the event loop, bench.floor) and beside hand-written NumPy alone plus an echo of the request's
bytes over HTTP. Interleaved rounds; each line a median (min-max) of the rounds' medians."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import httpx
import numpy as np

from bench import floor
from bench.common import Samples
from bench.mlp import AS_A_WORKER, make_mlp
from client import Client, to_numpy
from service.launcher import start_server
from service.transport.executors import tune_for_requests


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=10, help="calls per round")
    parser.add_argument("--tiny", action="store_true", help="an MLP 8-4-4-2, batch 4: only to check it runs")
    args = parser.parse_args()
    tune_for_requests()  # NumPy alone measured with a worker's BLAS threads
    mlp = make_mlp((8, 4, 4, 2), 4) if args.tiny else make_mlp()
    quiet = {"GRADSERVE_LOG_LEVEL": "warning"}
    floor_command = [
        *(sys.executable, "-m", "bench.floor", "--sizes", ",".join(map(str, mlp.sizes))),
        *("--batch", str(len(mlp.x))),
    ]
    servers = {
        "process": start_server({**quiet, "GRADSERVE_ISOLATION": "process"}),
        "thread": start_server({**quiet, "GRADSERVE_ISOLATION": "thread"}),
        "floor": start_server(AS_A_WORKER, floor_command),
    }
    as_numpy = (mlp.network(lambda a: a), mlp.samples(lambda a: a))
    body, layout = floor.pack(mlp), floor.answer_layout(mlp.sizes)
    try:
        with (
            Client(servers["process"].url) as in_process,
            Client(servers["thread"].url) as in_thread,
            httpx.Client(timeout=60) as http,
        ):

            def gradserve(client: Client) -> Callable[[], object]:
                def call() -> list[np.ndarray]:
                    got = client.gradients(*as_numpy, include_units=False, array_encoding="binary").gradients
                    return [to_numpy(w.value) for w in got.weights] + [
                        to_numpy(b) for b in got.biases.values()
                    ]

                return call

            def on_the_floor() -> list[np.ndarray]:
                return floor.unpack(
                    http.post(servers["floor"].url + "/", content=floor.pack(mlp)).content, layout
                )

            def echo() -> bytes:
                return http.post(servers["floor"].url + "/echo", content=body).content

            calls: dict[str, Callable[[], object]] = {
                "floor: raw bytes over HTTP + NumPy on the loop": on_the_floor,
                "hand-written NumPy alone": lambda: floor.hand_written(mlp),
                "an echo of the request's bytes over HTTP": echo,
                "gradserve, a worker process (isolation=process)": gradserve(in_process),
                "gradserve, a thread (isolation=thread)": gradserve(in_thread),
            }
            rounds: dict[str, Samples] = {name: [] for name in calls}
            for call in calls.values():
                call()  # warm up
            for k in range(args.rounds):
                order = list(calls.items())
                for name, call in order if k % 2 == 0 else order[::-1]:
                    times = []
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        call()
                        times.append(time.perf_counter() - started)
                    rounds[name].append(statistics.median(times))
    finally:
        for server in servers.values():
            server.stop()
    med = {name: statistics.median(times) for name, times in rounds.items()}
    floor_ms = med["floor: raw bytes over HTTP + NumPy on the loop"]
    numpy_echo = med["hand-written NumPy alone"] + med["an echo of the request's bytes over HTTP"]
    title = f"P2 binary end to end, {args.rounds} interleaved rounds of {args.repeat} calls"
    print(f"{title}: ms, / floor, / (NumPy + echo)")
    for name, times in rounds.items():
        spread = f"({min(times) * 1e3:.2f}-{max(times) * 1e3:.2f})"
        print(
            f"  {name:<50} {med[name] * 1e3:8.2f} {spread:<16} {med[name] / floor_ms:6.2f}x "
            f"{med[name] / numpy_echo:6.2f}x"
        )


if __name__ == "__main__":
    main()
