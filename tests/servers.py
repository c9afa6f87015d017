"""Live servers for the tests: `Serve` starts each (`service.launcher.start_server`) and stops
every one it started, by its process, when the test or module that asked for them ends. The
fixtures are in tests/conftest.py: `serve` (a test's servers) and `serve_module` (a module's)."""

from __future__ import annotations

from service.launcher import READY_WITHIN_S, Server, start_server


class Serve:
    """`serve(env)` is a running server with those settings (`command` in place of `python -m
    service`: it gets --port); stopped when its fixture ends, or sooner by `server.stop()`, for
    a test that reads its log or its exit once it is gone."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __call__(
        self,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        ready_s: float = READY_WITHIN_S,
    ) -> Server:
        server = start_server(env, command, ready_s)
        self.started.append(server)
        return server

    def stop(self) -> None:
        """Stop every server started here (a stopped one again is nothing)."""
        while self.started:
            self.started.pop().stop()
