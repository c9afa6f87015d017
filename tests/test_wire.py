"""The wire module stands alone: pydantic only, so the client can use it without the server."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "fastapi", "starlette", "uvicorn", "orjson")


def test_the_wire_imports_without_the_server_dependencies() -> None:
    code = "import sys, service.wire; print(' '.join(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
