"""`make serve` takes the port and host on its command line (a dry run: nothing is started)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def serve_command(*assignments: str) -> str:
    """The line `make serve` would run to start the server."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST")}
    out = subprocess.run(
        ["make", "--no-print-directory", "--dry-run", "--always-make", "serve", *assignments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return next(line for line in out.splitlines() if line.split()[0].endswith("/gradserve"))


def test_make_serve_takes_a_port_and_a_host() -> None:
    assert serve_command("PORT=9137").split()[1:] == ["--port", "9137"]
    assert serve_command("PORT=9137", "HOST=0.0.0.0").split()[1:] == ["--port", "9137", "--host", "0.0.0.0"]
    assert serve_command().split()[1:] == []  # gradserve's own defaults (GRADSERVE_PORT, else 8000)


def test_make_quick_runs_every_test_but_the_slow_ones() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "--dry-run", "--always-make", "quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.splitlines()[-1].endswith('/pytest -q -m "not slow"')
