"""Shared fixtures: a live server on a free loopback port, and hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, settings

from service.launcher import start_server

settings.register_profile(
    "default", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The base URL of a real uvicorn server, shared by the end-to-end tests."""
    server = start_server()
    yield server.url
    server.stop()


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=60) as client:
        yield client
