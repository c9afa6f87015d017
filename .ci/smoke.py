"""Wait for a gradserve at URL, then check the seed's chain gradients through the SDK."""

from __future__ import annotations

import math
import sys
import time

from client import Client, single_units
from service.endpoints.selfcheck import chain_gradients


def main(url: str) -> None:
    with Client(url, max_retries=0, timeout=5) as gs:
        deadline = time.monotonic() + 120
        while True:
            try:
                if gs.health(ready=True).status == "ready":
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
        x, y, w1, w2, w3 = 1.5, 0.25, 0.5, -0.3, 0.8
        chain = single_units({"x->j": w1, "j->k": w2, "k->o": w3}, inputs=["x"], outputs=["o"])
        got = [
            w.value
            for w in gs.gradients(chain, {"inputs": {"x": [x]}, "targets": {"o": [y]}}).gradients.weights
        ]
    expected = chain_gradients(x, y, w1, w2, w3)
    assert all(math.isclose(g, x_, rel_tol=1e-12) for g, x_ in zip(got, expected, strict=True)), (
        got,
        expected,
    )
    print(f"gradients from the container: {got}")


if __name__ == "__main__":
    main(sys.argv[1])
