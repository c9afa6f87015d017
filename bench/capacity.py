"""Capacity of one pod: requests per second the server answers on 1 and on 2 CPUs, for the seed's
chain (/v1/gradients, JSON) and for the P2 MLP (784-256-256-10, batch 256, binary arrays),
the numbers the README's HPA advice is worked from.

    python -m bench.capacity [--seconds 6]

A pod of N CPUs is the server pinned to N cores (`taskset`) with GRADSERVE_MAX_CONCURRENT=N,
as deploy/kubernetes runs it (one uvicorn process, its worker pool the pod's CPUs). Two
figures each: the rate measured, which on a shared machine (the load generator runs there
too) is what was left over, and the rate the CPU time allows: N CPU-seconds a second over the
CPU time the server's processes spent per request (their utime + stime), which other load on
the machine barely moves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import throughput
from bench.throughput import CHAIN
from client import Client, mlp
from service.launcher import start_server


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    for task in Path(f"/proc/{pid}/task").iterdir():  # the pool starts workers from threads
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def mlp_rate(url: str, seconds: float, concurrency: int) -> float:
    """Gradients of the MLP per second, `concurrency` SDK clients posting binary arrays."""
    rng = np.random.default_rng(0)
    net = mlp([784, 256, 256, 10], seed=0)
    samples = {
        "inputs": {"input": rng.random((256, 784))},
        "targets": {"output": np.eye(10)[rng.integers(0, 10, size=256)]},
    }
    done = [0] * concurrency
    with Client(url, timeout=120) as warm:
        warm.gradients(net, samples, include_units=False, array_encoding="binary")
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        with Client(url, timeout=120) as gs:
            while time.monotonic() < stop:
                gs.gradients(net, samples, include_units=False, array_encoding="binary")
                done[k] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of load per figure")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None or len(cores) < 2:
        raise SystemExit("bench.capacity needs taskset and at least 2 cores")
    body = json.dumps(CHAIN).encode()
    rows = []
    for cpus in (1, 2):
        pinned = ",".join(map(str, cores[:cpus]))
        env = {"GRADSERVE_MAX_CONCURRENT": str(cpus), "GRADSERVE_LOG_LEVEL": "warning"}
        server = start_server(env, ["taskset", "-c", pinned, sys.executable, "-m", "service"])
        try:
            throughput(server.url + "/v1/gradients", body, 1.0)  # warm up
            used = cpu_seconds(server.pid)
            chain = throughput(server.url + "/v1/gradients", body, args.seconds)
            chain_cpu = (cpu_seconds(server.pid) - used) / (chain * args.seconds)
            used, started = cpu_seconds(server.pid), time.monotonic()
            net = mlp_rate(server.url, args.seconds, concurrency=2 * cpus)
            net_cpu = (cpu_seconds(server.pid) - used) / (net * (time.monotonic() - started))
        finally:
            server.stop()
        rows.append((cpus, chain, net))
        print(
            f"{cpus} CPU: chain {chain:,.0f} req/s measured, {cpus / chain_cpu:,.0f} by CPU time "
            f"({chain_cpu * 1e3:.2f} CPU-ms each); MLP {net:.1f} req/s measured, {cpus / net_cpu:.1f} by "
            f"CPU time ({net_cpu * 1e3:.0f} CPU-ms each)",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")


if __name__ == "__main__":
    main()
