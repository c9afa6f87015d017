"""Schemathesis against a live server: every operation, checked against its own OpenAPI document."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import Serve

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # (a hang guard: two shared cores under load took over the 300 s default)
def test_schemathesis_finds_nothing(tmp_path: Path, serve: Serve) -> None:
    # A deadline and a queue that a loaded machine does not reach: a 503 for either would be the
    # contract, but a server error to the checks (the work a request may ask for is bounded by
    # max_work before it runs).
    server = serve({"GRADSERVE_TIMEOUT_S": "300", "GRADSERVE_QUEUE_TIMEOUT_S": "300"})
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    run = subprocess.run(
        [
            cli, "run", server.url + "/openapi.json",
            "--checks", CHECKS,
            "--seed", "20261127",
            "--max-examples", "60",
            "--workers", "2",
            "--request-timeout", "600",
            "--report", "junit", "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=1100, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
