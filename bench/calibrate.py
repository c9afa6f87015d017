"""Measure the per-element constants of the cost model on this machine, beside the figures the
service uses: `OPENBLAS_NUM_THREADS=1 python -m bench.calibrate`. The constants are
`service.pipeline.costs`'s and `service.pipeline.scan`'s, and each activation's and loss's own
(`forward_ns`, `backward_ns`, `output_ns` in its registry entry, printed in parentheses beside
what was measured; `!` marks a measured figure over twice the registry's).

Each figure is CPU time, the least of a few runs, on one core (the workers' BLAS runs one
thread each): other processes on a shared machine then inflate it as little as possible. The
values are random, as NumPy has fast paths for zeros. Copy what it prints into bench/RESULTS.md when the
constants change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import orjson

from service import engine, wire
from service.convert import binding
from service.convert.encoding import dumps
from service.engine.losses import Outputs
from service.transport import executors
from service.wire import framing

RNG = np.random.default_rng(0)


def fastest_ms(fn: Callable[[], object], runs: int = 7) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1e3


def compiled(request: dict[str, Any]) -> tuple[engine.Plan, engine.Batch]:
    plan = binding.compile_network(wire.Network.model_validate(request["network"]))
    return plan, binding.bind_samples(plan, wire.Samples.model_validate(request["samples"]), True)


def layer(n: int, activation: str, batch: int) -> dict[str, Any]:
    """One input feeding a layer of `n` units by a dense weight: s is random, as in real use."""
    units = [
        {"id": "x", "role": "input"},
        {"id": "h", "size": n, "activation": activation},
        {"id": "o", "role": "output"},
    ]
    weights = [{"source": "x", "target": "h", "value": RNG.normal(size=(1, n)).tolist()}]
    samples = {"inputs": {"x": RNG.normal(size=batch).tolist()}, "targets": {"o": [0.0] * batch}}
    return {"network": {"units": units, "weights": weights}, "samples": samples}


def _beside(measured: float, registered: float) -> str:
    """A measured figure, the registry's beside it, flagged when the registry's is far below."""
    return f"{measured:5.1f} ({registered:g}){'!' if measured > 2 * registered else ''}"


def elementwise() -> None:
    n, batch = 100_000, 10
    for name, activation in engine.ACTIVATIONS.items():
        plan, b = compiled(layer(n, name, batch))
        assert b.y is not None
        y = b.y
        values = engine.forward(plan, plan.theta, b.x)
        delta = engine.backward(plan, plan.theta, values, y)
        per = n * batch / 1e6  # ms -> ns per element
        forward = fastest_ms(partial(engine.forward, plan, plan.theta, b.x)) / per
        backward = fastest_ms(partial(engine.backward, plan, plan.theta, values, y)) / per
        gradient = fastest_ms(partial(engine.gradient, plan, values, delta, 1.0)) / per
        print(
            f"  {name:13s} forward {_beside(forward, activation.forward_ns):12s}"
            f"  backward {_beside(backward, activation.backward_ns):12s}  gradient {gradient:5.1f} ns"
        )


def losses() -> None:
    """Each loss's E_n and its gradient, per output entry and sample (sigmoid outputs, random
    targets in (0, 1), which every loss takes)."""
    n, batch = 100_000, 10
    s = RNG.normal(size=(n, batch))
    z, y, cols = engine.sigmoid(s), RNG.uniform(size=(batch, n)), np.arange(n)
    for name, loss in engine.LOSSES.items():

        def both(loss: Any = loss) -> None:
            outputs = Outputs(s, z, cols, y, n, None)
            loss.values(outputs)
            loss.gradient(outputs)

        ns = fastest_ms(both) / (n * batch / 1e6)
        print(f"  {name:20s} {_beside(ns, loss.output_ns)} ns")


def dense() -> None:
    for m, batch in ((256, 256), (64, 1000), (32, 64)):
        units = [
            {"id": "x", "role": "input", "size": m},
            {"id": "o", "role": "output", "size": m, "activation": "relu"},
        ]
        weights = [{"source": "x", "target": "o", "value": RNG.normal(size=(m, m)).tolist()}]
        samples = {
            "inputs": {"x": RNG.normal(size=(batch, m)).tolist()},
            "targets": {"o": RNG.normal(size=(batch, m)).tolist()},
        }
        plan, b = compiled({"network": {"units": units, "weights": weights}, "samples": samples})
        ms = fastest_ms(partial(engine.forward, plan, plan.theta, b.x))
        print(f"  {m}x{m} weights, batch {batch}: {m * m * batch / ms:.3g} multiply-adds a millisecond")


def levels() -> None:
    n = 500
    ids = ["x", *(f"u{k}" for k in range(n)), "o"]
    units = [{"id": "x", "role": "input"}, *({"id": u} for u in ids[1:-1]), {"id": "o", "role": "output"}]
    weights = {"source": ids[:-1], "target": ids[1:], "value": RNG.normal(size=n + 1).tolist()}
    request = {"network": {"units": units, "weights": weights}, "samples": {"inputs": {"x": [0.5]}}}
    request["samples"]["targets"] = {"o": [0.0]}
    plan, b = compiled(request)
    assert b.y is not None
    y = b.y
    values = engine.forward(plan, plan.theta, b.x)
    delta = engine.backward(plan, plan.theta, values, y)
    per = len(plan.levels) / 1e3  # ms -> us per level
    network = wire.Network.model_validate(request["network"])
    forward = fastest_ms(partial(engine.forward, plan, plan.theta, b.x)) / per
    backward = fastest_ms(partial(engine.backward, plan, plan.theta, values, y)) / per
    gradient = fastest_ms(partial(engine.gradient, plan, values, delta, 1.0)) / per
    compiling = fastest_ms(partial(binding.compile_network, network)) / per
    print(
        f"  forward {forward:.1f}  backward {backward:.1f}  gradient {gradient:.1f}  compile {compiling:.1f}"
        " us/level (a chain of single units)"
    )


def answers() -> None:
    numbers = RNG.normal(size=1_000_000)
    for encoding in ("list", "base64"):
        ms = fastest_ms(partial(dumps, {"a": numbers}, encoding), 3)
        size = len(dumps({"a": numbers}, encoding)) / numbers.size
        print(f"  {encoding:6s} {ms:.1f} ns and {size:.1f} bytes a number (random normals)")


def parsing() -> None:
    bodies = {
        "numbers in lists": {"samples": {"inputs": {"x": RNG.normal(size=(2000, 100)).tolist()}}},
        "unit objects": {"network": {"units": [{"id": f"u{k}"} for k in range(20_000)]}},
        "weight objects": {
            "network": {
                "units": [{"id": "a"}],
                "weights": [{"source": f"u{k}", "target": "b", "value": 0.5} for k in range(20_000)],
            }
        },
        "ids in columns": {
            "network": {
                "units": [{"id": "a"}],
                "weights": {"source": ["u1"] * 50_000, "target": ["u2"] * 50_000, "value": []},
            }
        },
    }
    bodies["empty lists"] = {"samples": {"inputs": {"x": [[]] * 50_000}}}
    for name, content in bodies.items():
        request = {"network": {"units": [{"id": "a"}]}, "samples": {"inputs": {}}}
        for key, value in content.items():
            request[key] = {**request[key], **value}
        body = json.dumps(request).encode()
        counted = (body.count(b"{"), body.count(b'"') // 2, body.count(b","))
        objects, strings, items = (max(1, n) for n in counted)
        lists = max(1, body.count(b"["))
        ns = fastest_ms(partial(wire.ForwardRequest.model_validate_json, body), 3) * 1e6
        print(
            f"  {name:17s} {ns / len(body):6.1f} ns a byte; {ns / objects:8.0f} ns an object, "
            f"{ns / strings:6.0f} a string, {ns / items:5.0f} an item, {ns / lists:5.0f} a list"
        )
    # a binary body's document is parsed into Python objects and walked for its references too
    document = b"[" + b",".join([b'[[1],{"a":[]}]'] * 50_000) + b"]"
    containers = document.count(b"[") + document.count(b"{")
    ns = fastest_ms(lambda: framing.references(orjson.loads(document), 0), 3) * 1e6
    print(f"  framing walk      {ns / containers:6.0f} ns a list or object (parsed and walked)")


def main() -> None:
    executors.tune_for_requests()
    print("elementwise, per unit and sample (ns; the registry's in parentheses):")
    elementwise()
    print("losses, per output entry and sample, E_n and its gradient (ns; the registry's in parentheses):")
    losses()
    print("matrix products:")
    dense()
    print("per level:")
    levels()
    print("serialising an answer:")
    answers()
    print("parsing a body:")
    parsing()


if __name__ == "__main__":
    main()
