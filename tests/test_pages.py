"""The playground and the API docs over HTTP: served from the service, open without the API key."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from service.launcher import start_server
from tests import seed

KEY = "a-test-key-of-the-pages"
# an address the pages could fetch from: a scheme and host inside a quoted string or url()
ANOTHER_HOST = re.compile(r"""(?:["'`(]|url\()\s*(?:https?:)?//(?!www\.w3\.org/2000/svg)""")


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
    assert {"/playground/app.js", "/playground/style.css"} <= set(files)
    for path in files:
        answer = http.get(path)
        assert answer.status_code == 200, path
        assert not ANOTHER_HOST.search(answer.text), path
    assert not ANOTHER_HOST.search(page.text)


def test_the_playground_has_no_layout_of_its_own(http: httpx.Client) -> None:
    """It draws /v1/render?format=layout: service.endpoints.drawing is the only layout."""
    assert http.get("/playground/layout.js").status_code == 404
    script = http.get("/playground/app.js").text
    assert "import " not in script  # app.js is the playground's only script
    assert "/v1/render?format=layout" in script
    # the words of a layered layout's steps: layers, ordering, crossings, routes, label spots
    for word in ("barycent", "crossings", "Kahn", "bezier", "placeLabels", "pathData", "dummy"):
        assert word.lower() not in script.lower(), word


def test_the_playgrounds_chain_is_the_seeds(http: httpx.Client) -> None:
    script = http.get("/playground/app.js").text
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
            "/playground/app.js",
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
