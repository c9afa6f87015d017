"""The playground and the API docs over HTTP: served from the service, open without the API key."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from service.launcher import start_server
from tests import seed

KEY = "a-test-key"
# an address the pages could fetch from: a scheme and host inside a quoted string or url()
ANOTHER_HOST = re.compile(
    r"""(?:["'`(]|url\()\s*(?:https?:)?//(?!www\.w3\.org/(?:2000/svg|1998/Math/MathML))"""
)


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    server = start_server(env={"GRADSERVE_API_KEY": KEY, "GRADSERVE_ISOLATION": "thread"})
    yield server.url
    server.stop()


def assets(html: str) -> list[str]:
    """The scripts, styles and icons a page loads."""
    return re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css|png))["']""", html)


def test_the_playground_page_and_its_files_come_from_the_service(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    files = assets(page.text)
    assert {"/playground/main.js", "/playground/style.css"} <= set(files)
    for path in files + [f"/playground/{m}" for m in modules(http)]:
        answer = http.get(path)
        assert answer.status_code == 200, path
        assert not ANOTHER_HOST.search(answer.text), path
    assert not ANOTHER_HOST.search(page.text)


def modules(http: httpx.Client) -> list[str]:
    """The playground's ES modules: main.js and every module it imports, transitively."""
    seen: list[str] = []
    todo = ["main.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        script = http.get(f"/playground/{name}")
        assert script.status_code == 200, name
        todo += re.findall(r'^import .* from "\./([\w-]+\.js)";$', script.text, re.MULTILINE)
    return seen


def test_the_playground_is_es_modules_with_no_build_step_and_no_eval(http: httpx.Client) -> None:
    names = modules(http)
    assert len(names) >= 8  # one module a part of the page, not one script
    for name in names:
        script = http.get(f"/playground/{name}")
        assert script.headers["content-type"].startswith("text/javascript"), name
        assert not re.search(r"\beval\(|new Function\(|innerHTML", script.text), name
        assert len(script.text.splitlines()) <= 450, name


def test_the_playground_has_no_layout_of_its_own(http: httpx.Client) -> None:
    """It draws /v1/render?format=layout: service.endpoints.drawing is the only layout."""
    assert http.get("/playground/layout.js").status_code == 404
    script = "\n".join(http.get(f"/playground/{m}").text for m in modules(http))
    assert "/v1/render?format=layout" in http.get("/playground/graph.js").text
    # the words of a layered layout's steps: layers, ordering, crossings, routes, label spots
    for word in ("barycent", "crossings", "Kahn", "bezier", "placeLabels", "pathData", "dummy"):
        assert word.lower() not in script.lower(), word


def test_the_playgrounds_chain_is_the_seeds(http: httpx.Client) -> None:
    script = http.get("/playground/examples.js").text
    chain = seed.chain().network
    weights = ", ".join(f'w("{w["source"]}", "{w["target"]}", {w["value"]})' for w in chain["weights"])
    assert weights in script
    assert "inputs: { x: [[1.5]] }, targets: { o: [[0.25]] }" in script


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_every_file_from_the_service(http: httpx.Client, page: str) -> None:
    html = http.get(page)
    assert html.status_code == 200
    files = assets(html.text)
    assert files, html.text
    for path in files:
        assert path.startswith("/"), path  # this host, not a CDN
        assert http.get(path).status_code == 200, path
    assert "fonts.googleapis" not in html.text


def test_redocs_bundle_is_served_without_its_cdn_logo(http: httpx.Client) -> None:
    bundle = http.get("/docs-assets/redoc.standalone.js")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "cdn.redoc.ly" not in bundle.text
    assert "/docs-assets/favicon.png" in bundle.text


def test_with_a_key_the_pages_load_and_the_api_stays_closed(keyed_url: str) -> None:
    with httpx.Client(base_url=keyed_url, timeout=30) as http:
        for path in [
            "/",
            "/playground/main.js",
            "/docs",
            "/redoc",
            "/openapi.json",
            "/docs-assets/swagger-ui.css",
        ]:
            assert http.get(path).status_code == 200, path
        body = {"network": seed.chain().network, "samples": seed.chain().samples}
        for method, path in [("GET", "/v1/info"), ("GET", "/metrics"), ("POST", "/v1/gradients")]:
            answer = http.request(method, path, json=body if method == "POST" else None)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"] == "application/problem+json"
        # open means a browser's GET: anything else on those paths still needs the key
        assert http.post("/openapi.json", json={}).status_code == 401
        assert http.post("/", json={}).status_code == 401
        authorised = http.post("/v1/gradients", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert authorised.status_code == 200
        # the docs' Authorize button needs the OpenAPI document to say how
        schemes = http.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes == {"bearer": {"type": "http", "scheme": "bearer"}}
