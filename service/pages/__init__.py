"""The pages a browser loads: the playground at / and the API docs at /docs and /redoc.

Every file they need is served by the service itself: the playground's from this package, Swagger
UI's and ReDoc's from the fastapi-offline package. Nothing is fetched from another host.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse, Response

PLAYGROUND = Path(__file__).parent / "playground"
PLAYGROUND_ASSETS = "/playground"
DOCS_ASSETS = "/docs-assets"
SWAGGER_OAUTH2_REDIRECT = "/docs/oauth2-redirect"

# the pages load nothing but this service's own files and speak to nothing but its API (the HTTP
# layer adds frame-ancestors, and nosniff, to every page: service.http.middleware.SecurityHeaders);
# data: and blob: images are Swagger UI's icons (the playground paints its own canvases)
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
# ReDoc runs its search in a web worker it starts from a blob: URL
REDOC_POLICY = POLICY + "; worker-src blob:"
# ReDoc's bundle makes <style> elements as it loads (style-loader, styled-components), each with
# the nonce webpack holds (`__webpack_require__.nc`), which nothing outside the bundle can set
# before they are made: the bundle served here takes it from its own <script> tag's nonce
REDOC_NONCE = (b"n.nc=void 0;", b"n.nc=document.currentScript&&document.currentScript.nonce||void 0;")
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)
_REDOC_SCRIPT = re.compile(rb'(<script src="[^"]*/redoc\.standalone\.js")')
# ReDoc's sidebar credit shows an image from ReDoc's CDN, with no option to turn it off
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def docs_static() -> Path:
    """Swagger UI's and ReDoc's scripts and CSS, as the fastapi-offline package ships them."""
    return Path(str(files("fastapi_offline") / "static"))


@lru_cache(maxsize=1)
def redoc_script() -> bytes:
    """ReDoc's bundle with its one request to another host pointed at this service's icon."""
    script = (docs_static() / "redoc.standalone.js").read_bytes()
    assert script.count(REDOC_NONCE[0]) == 1, "ReDoc's bundle no longer sets webpack's nonce as it did"
    return script.replace(REDOC_CDN_LOGO, f"{DOCS_ASSETS}/favicon.png".encode()).replace(*REDOC_NONCE)


def with_policy(page: HTMLResponse, policy: str = POLICY, styles_nonce: bool = False) -> HTMLResponse:
    """`page` with `policy`, which also lets exactly the page's inline scripts and styles run
    (FastAPI's docs pages start Swagger UI from one, and ReDoc styles its body in one), by their
    SHA-256: nothing injected into the page would. With `styles_nonce`, the styles ReDoc's
    bundle makes (REDOC_NONCE) are allowed by a nonce new for each answer, set on its script."""
    html = bytes(page.body)
    allowed: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(html):
        allowed[kind].append(f"'sha256-{base64.b64encode(hashlib.sha256(content).digest()).decode()}'")
    if styles_nonce:
        nonce = secrets.token_urlsafe(18)
        html, found = _REDOC_SCRIPT.subn(rb'\1 nonce="' + nonce.encode() + b'"', html, count=1)
        assert found == 1, "ReDoc's page has no script tag of its bundle"
        allowed[b"style"].append(f"'nonce-{nonce}'")
    for kind, sources in allowed.items():
        if sources:
            directive = f"{kind.decode()}-src 'self'"
            policy = policy.replace(directive, " ".join([directive, *sources]))
    return HTMLResponse(html, headers={"content-security-policy": policy})


def mount(app: FastAPI) -> None:
    """GET / (the playground and its files under /playground), /docs, /redoc and their files."""

    @app.get("/", include_in_schema=False)
    def playground() -> FileResponse:
        return FileResponse(
            PLAYGROUND / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"content-security-policy": POLICY, "cache-control": "no-cache"},
        )

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return with_policy(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{SWAGGER_OAUTH2_REDIRECT}",
                swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                # no online validator badge; the key typed into Authorize is kept by the page
                # only, never in localStorage (persistAuthorization), where any script of
                # this origin could read it
                swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
            )
        )

    @app.get(SWAGGER_OAUTH2_REDIRECT, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return with_policy(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return with_policy(
            get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            ),
            REDOC_POLICY,
            styles_nonce=True,
        )

    # before the mount below, which would otherwise answer this path with the bundle unchanged
    @app.get(f"{DOCS_ASSETS}/redoc.standalone.js", include_in_schema=False)
    def redoc_bundle() -> Response:
        return Response(
            redoc_script(),
            media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "public, max-age=86400"},
        )

    app.mount(PLAYGROUND_ASSETS, StaticFiles(directory=PLAYGROUND), name="playground")
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_static()), name="docs-assets")


# what a browser loads before anyone can type an API key in: the pages, their files and the
# OpenAPI document the docs read (the public contract); the API itself stays behind the key
OPEN_PATHS = frozenset({"/", "/docs", SWAGGER_OAUTH2_REDIRECT, "/redoc", "/openapi.json"})
OPEN_PREFIXES = (PLAYGROUND_ASSETS + "/", DOCS_ASSETS + "/")
