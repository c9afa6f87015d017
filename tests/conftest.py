"""Shared fixtures: live servers on free loopback ports, and hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests.servers import Serve

settings.register_profile(
    "default", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Servers of a test's own (`serve(env)`), stopped as the test ends."""
    servers = Serve()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def serve_module() -> Iterator[Serve]:
    """Servers a module's tests share (asked for by a module-scoped fixture), stopped as the
    module ends."""
    servers = Serve()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The base URL of a real uvicorn server with the default settings, shared by the
    end-to-end tests."""
    servers = Serve()
    yield servers().url
    servers.stop()


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=60) as client:
        yield client
