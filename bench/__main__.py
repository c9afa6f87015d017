"""`python -m bench`: each workload against its reference, in one run, as medians and ratios."""

from __future__ import annotations

import argparse
import os
import platform
import statistics

from bench import mlp


def report(title: str, results: dict[str, list[float]], reference: str) -> None:
    print(f"\n{title}")
    base = statistics.median(results[reference])
    for name, times in results.items():
        med = statistics.median(times)
        spread = f"(min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f})"
        print(f"  {name:<22} median {med * 1e3:8.2f} ms  {spread}  ratio {med / base:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per measurement")
    parser.add_argument("--tiny", action="store_true", help="small sizes, to check that the bench runs")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.tiny:
        report(
            "P2 MLP 8-4-4-2, batch 4",
            mlp.run(repeat=args.repeat, sizes=(8, 4, 4, 2), batch=4),
            "hand-written NumPy",
        )
    else:
        report(
            "P2 MLP 784-256-256-10 sigmoid, batch 256: forward + backward",
            mlp.run(args.repeat),
            "hand-written NumPy",
        )


if __name__ == "__main__":
    main()
