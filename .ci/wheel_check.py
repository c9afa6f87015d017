"""Serve from an installed wheel and ask for what a user would: the playground with every file
it loads, /docs with its assets, and the chain's gradients.

    python wheel_check.py PATH/TO/gradserve      (run outside the checkout, by the venv's python)
"""

from __future__ import annotations

import math
import re
import sys

import httpx

import service
from client import Client, single_units
from service.endpoints.selfcheck import chain_gradients
from service.launcher import start_server

#: what a page or a script module loads from the service: src/href, and ES module imports
LOADS = re.compile(r"""(?:src|href)="(/[^"]*)"|(?:from|import)\s*["'](\.{1,2}/[^"']+)["']""")


def crawl(http: httpx.Client, path: str, seen: set[str]) -> None:
    if path in seen:
        return
    seen.add(path)
    answer = http.get(path)
    assert answer.status_code == 200, (path, answer.status_code)
    if not answer.headers.get("content-type", "").startswith(
        ("text/html", "text/javascript", "application/javascript")
    ):
        return
    for absolute, relative in LOADS.findall(answer.text):
        target = absolute or str(httpx.URL(f"http://x{path}").join(relative).path)
        if target.startswith(("/playground", "/docs-assets")):
            crawl(http, target, seen)


def main(gradserve: str) -> None:
    assert "site-packages" in (service.__file__ or ""), f"service imported from {service.__file__}"
    server = start_server(command=[gradserve])
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            seen: set[str] = set()
            crawl(http, "/", seen)
            crawl(http, "/docs", seen)
            assert any(p.startswith("/playground/") for p in seen), seen
            assert any(p.startswith("/docs-assets/") for p in seen), seen
        chain = single_units({"x->j": 0.5, "j->k": -0.3, "k->o": 0.8}, inputs=["x"], outputs=["o"])
        with Client(server.url) as gs:
            got = gs.gradients(chain, {"inputs": {"x": [1.5]}, "targets": {"o": [0.25]}})
        values = [w.value for w in got.gradients.weights]
        expected = chain_gradients(1.5, 0.25, 0.5, -0.3, 0.8)
        assert all(
            isinstance(v, float) and math.isclose(v, e, rel_tol=1e-12)
            for v, e in zip(values, expected, strict=True)
        ), values
        print(f"wheel: served {len(seen)} pages and files and the chain's gradients from {service.__file__}")
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1])
