"""Record answers_before_hvp.json: run from a checkout of the code before /v1/hvp, input
gradients and the new losses (`python tests/recorded/record.py > answers_before_hvp.json`).

It draws networks with that checkout's own strategies (its losses and activations), posts
forward, gradients, check and explain requests to its app in-process, and keeps each request
and the sha256 of each answer's bytes; tests/test_unchanged.py posts them again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from hypothesis import given, settings

sys.path.insert(0, ".")

from service.settings import Settings
from tests.strategies import networks
from tests.support import asgi

cases: list[tuple[dict[str, Any], dict[str, Any]]] = []


@settings(max_examples=14, derandomize=True, deadline=None, database=None)
@given(networks(max_hidden=3))
def collect(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    cases.append(case)


def main() -> None:
    collect()
    asked = []
    for k in range(len(cases)):
        encoding = ["list", "base64"][k % 2]
        asked += [
            (k, "/v1/forward", {"array_encoding": encoding}),
            (k, "/v1/gradients", {"array_encoding": encoding}),
            (k, "/v1/gradients", {"per_sample": True, "reduction": "sum", "include_units": k % 3 == 0}),
            (k, "/v1/check", {}),
            (k, "/v1/explain", {"max_paths": 4}),
        ]

    def body(k: int, options: dict[str, Any]) -> dict[str, Any]:
        net, samples = cases[k]
        return {"network": net, "samples": samples, **options}

    answers = asgi(Settings(), *[("POST", path, {"json": body(k, o)}) for k, path, o in asked])
    recorded = {
        "cases": [{"network": n, "samples": s} for n, s in cases],
        "requests": [
            {
                "case": k,
                "path": path,
                "options": o,
                "status": r.status_code,
                "sha256": hashlib.sha256(r.content).hexdigest(),
            }
            for (k, path, o), r in zip(asked, answers, strict=True)
        ],
    }
    json.dump(recorded, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
