"""What the browser tests share: Debian's chromium driven by Playwright, a page opener that fails
a test on any request to another host or any console error, and screenshots.

Screenshots go to GRADSERVE_TEST_ARTIFACTS (default: test-artifacts/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.servers import Serve

CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)"

ARTIFACTS = Path(os.environ.get("GRADSERVE_TEST_ARTIFACTS", "test-artifacts"))
KEY = "browser-test-key"
UNAUTHORISED = "the server responded with a status of 401"


@dataclass
class Watch:
    """What a page asked of other hosts and what it logged as an error."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # console errors a test expects

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def keyed_url(serve_module: Serve) -> str:
    return serve_module({"GRADSERVE_API_KEY": KEY, "GRADSERVE_ISOLATION": "thread"}).url


Opener = Callable[..., tuple[Any, Watch]]


@pytest.fixture
def open_page(browser: Any, server_url: str) -> Iterator[Opener]:
    """Open a path in a fresh browser context; on teardown, fail on any foreign request or error."""
    contexts: list[Any] = []
    watches: list[Watch] = []

    def opener(
        path: str, *, base: str = server_url, width: int = 1280, height: int = 900
    ) -> tuple[Any, Watch]:
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        contexts.append(context)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(base))
        watch = Watch(origin)
        watches.append(watch)

        def route(r: Any) -> None:
            if r.request.url.startswith(origin + "/"):
                r.continue_()
            else:
                watch.foreign.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.errors.append(f"uncaught: {e}"))
        page.goto(base + path)
        return page, watch

    yield opener
    for context in contexts:
        context.close()
    for watch in watches:
        assert watch.foreign == [], "requests to another host"
        assert watch.unexpected() == [], "console errors"


def ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready]")
    page.wait_for_selector("#weights-table td.grad[data-value]")


def shot(page: Any, name: str, *, full: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if not full:
        page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full)
    return path
