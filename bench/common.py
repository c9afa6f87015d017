"""What every workload needs: timing, load generation, memory readings, and the report."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

Samples = list[float]


def timed(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, Samples]:
    """Seconds per call of each function, `repeat` times after one warm-up call each.

    The functions take turns (a, b, c, a, b, c, ...), so that each ratio compares runs made
    under the same conditions: on a shared 2-core machine the same NumPy code measured 4.2 ms
    in one minute and 6.5 ms in the next.
    """
    for fn in fns.values():
        fn()
    times: dict[str, Samples] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def load_generator(concurrency: int = 8) -> str:
    """Which load generator `throughput` drives, in the words the report prints."""
    if shutil.which("hey"):
        return f"load from hey, {concurrency} connections"
    return f"load from {concurrency} Python threads, one httpx client each (hey is not installed)"


def hey(url: str, body: bytes, seconds: float, concurrency: int) -> tuple[float, int]:
    """`hey` posting `body` to `url` for `seconds` from `concurrency` connections: requests per
    second, and how many were answered 200 (none at all is an error)."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
         "-d", body.decode(), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    ok = sum(int(line.split()[1]) for line in out.splitlines() if line.strip().startswith("[200]"))
    if not ok:
        raise RuntimeError(f"the load generator saw no 200 answers:\n{out}")
    return float(next(line.split()[1] for line in out.splitlines() if "Requests/sec" in line)), ok


def throughput(url: str, body: bytes, seconds: float, concurrency: int = 8) -> float:
    """Requests per second against `url`: `hey` when installed, else a bounded httpx loop."""
    if shutil.which("hey"):
        return hey(url, body, seconds, concurrency)[0]
    done = [0] * concurrency
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client() as http:
            while time.monotonic() < stop:
                http.post(url, content=body, headers={"content-type": "application/json"}).raise_for_status()
                done[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def rss_kib(pid: int, field: str = "VmRSS", children: bool = True) -> int:
    """A process's resident memory (or its peak, VmHWM) plus, with `children`, that of all its
    descendants."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            total += int(line.split()[1])
    tasks = Path(f"/proc/{pid}/task").iterdir() if children else ()
    for task in tasks:  # the children of every thread: the pool starts workers from threads
        for child in (task / "children").read_text().split():
            total += rss_kib(int(child), field)
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process and all its descendants have used so far, the
    descendants still alive included (the service's workers live as long as it does)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def report(title: str, results: dict[str, Samples], reference: str, unit: str = "ms") -> dict[str, float]:
    """Print medians (min-max) and each one's ratio to the reference; return the ratios."""
    print(f"\n{title}")
    base = statistics.median(results[reference])
    scale = 1e3 if unit == "ms" else 1.0
    ratios = {}
    for name, values in results.items():
        med = statistics.median(values)
        ratios[name] = med / base
        spread = f"({min(values) * scale:.2f}-{max(values) * scale:.2f})"
        print(f"  {name:<34} {med * scale:10.2f} {unit} {spread:<20} {med / base:6.2f}x")
    return ratios
