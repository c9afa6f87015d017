"""The playground and the API docs over HTTP: served from the service, open without the API key."""

from __future__ import annotations

import re

import httpx
import pytest

from service.settings import Settings
from tests import seed
from tests.servers import Serve
from tests.support import asgi

KEY = "a-test-key-of-the-pages"
# an address the pages could fetch from: a scheme and host inside a quoted string or url()
ANOTHER_HOST = re.compile(
    r"""(?:["'`(]|url\()\s*(?:https?:)?//(?!www\.w3\.org/(?:2000/svg|1998/Math/MathML))"""
)


@pytest.fixture(scope="module")
def keyed_url(serve_module: Serve) -> str:
    return serve_module({"GRADSERVE_API_KEY": KEY, "GRADSERVE_ISOLATION": "thread"}).url


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


# ---------------------------------------------------------------- security headers

PAGES = ["/", "/docs", "/redoc", "/docs/oauth2-redirect"]


def directives(policy: str) -> dict[str, list[str]]:
    parts = (d.split() for d in policy.split(";") if d.strip())
    return {name: sources for name, *sources in parts}


def assert_confined(answer: httpx.Response, frame_ancestors: str = "'none'") -> None:
    """A policy that runs only this server's scripts and styles (and the page's own inline
    ones by their hashes, or ReDoc's by a nonce), and lets only `frame_ancestors` frame the page."""
    assert answer.headers["x-content-type-options"] == "nosniff"
    policy = directives(answer.headers["content-security-policy"])
    assert policy["frame-ancestors"] == frame_ancestors.split()
    for directive in ("script-src", "style-src", "default-src"):
        sources = policy.get(directive, policy["default-src"])
        assert sources[0] in ("'self'", "'none'"), (directive, sources)
        assert all(s in ("'self'", "'none'") or s.startswith(("'sha256-", "'nonce-")) for s in sources[1:]), (
            directive,
            sources,
        )
    assert policy["base-uri"] == ["'none'"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_a_policy_of_its_own_server_and_cannot_be_framed(
    http: httpx.Client, path: str
) -> None:
    answer = http.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert_confined(answer)


def test_swagger_ui_keeps_no_key_in_local_storage(http: httpx.Client) -> None:
    page = http.get("/docs").text
    assert re.search(r"""["']?persistAuthorization["']?\s*:\s*false""", page), page


def test_an_svg_drawing_has_the_policy_too(http: httpx.Client) -> None:
    body = {"network": seed.chain().network, "samples": seed.chain().samples}
    answer = http.post("/v1/render", json=body)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert_confined(answer)


def test_every_answer_says_nosniff(http: httpx.Client, keyed_url: str) -> None:
    """Pages, files, health, metrics, problems (401, 404, 405, 415, 422), JSON, binary and
    streamed answers: a browser takes each as the type it says, never sniffs another."""
    case = seed.chain()
    body = {"network": case.network, "samples": case.samples}
    answers = [
        http.get("/healthz"),
        http.get("/metrics"),
        http.get("/openapi.json"),
        http.get("/playground/main.js"),
        http.get("/docs-assets/swagger-ui.css"),
        http.get("/no/such/path"),
        http.get("/v1/gradients"),
        http.post("/v1/gradients", content=b"x", headers={"content-type": "text/plain"}),
        http.post("/v1/gradients", json={"network": {}}),
        http.post("/v1/gradients", json=body),
        http.post("/v1/gradients", json=body | {"array_encoding": "binary"}),
        httpx.get(keyed_url + "/v1/info"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 404, 405, 415, 422, 200, 200, 401]
    assert answers[10].headers["content-type"] == "application/octet-stream"
    with http.stream(
        "POST",
        "/v1/sgd",
        json=body | {"epochs": 3, "learning_rate": 0.1},
        headers={"accept": "text/event-stream"},
    ) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        answers.append(streamed)
        streamed.read()
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
    for answer in answers:
        if not answer.headers["content-type"].startswith(("text/html", "image/svg+xml")):
            assert "content-security-policy" not in answer.headers, answer.request.url


def test_embedding_is_allowed_where_the_setting_says_and_a_413_says_nosniff_too() -> None:
    settings = Settings(frame_ancestors="'self' https://intranet.example", max_body_bytes=10)
    answers = asgi(
        settings,
        ("GET", "/docs", {}),
        ("GET", "/", {}),
        ("POST", "/v1/gradients", {"content": b"{" * 100, "headers": {"content-type": "application/json"}}),
    )
    for answer in answers[:2]:
        assert_confined(answer, "'self' https://intranet.example")
    assert answers[2].status_code == 413
    assert answers[2].headers["x-content-type-options"] == "nosniff"
    with pytest.raises(ValueError, match="frame_ancestors"):
        Settings(frame_ancestors="'none'; script-src *")


def test_redocs_styles_are_allowed_by_a_nonce_new_for_each_page(http: httpx.Client) -> None:
    nonces = []
    for _ in range(2):
        page = http.get("/redoc")
        (nonce,) = re.findall(r"'nonce-([^']+)'", page.headers["content-security-policy"])
        assert f'redoc.standalone.js" nonce="{nonce}"' in page.text
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert "document.currentScript.nonce" in http.get("/docs-assets/redoc.standalone.js").text
