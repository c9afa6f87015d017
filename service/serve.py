"""Serve the API with uvicorn: what `gradserve` and `python -m service` run (service.__main__
imports this only once the server extra is known to be installed)."""

from __future__ import annotations

import argparse
import copy
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from service.http.keys import KeyFileError, KeyRing
from service.http.metrics import multiprocess_dir
from service.settings import get_settings


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus gradserve's: one JSON line per request (uvicorn's own access log is off)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["line"] = {"format": "%(message)s"}
    config["handlers"]["line"] = {
        "formatter": "line",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["gradserve.access"] = {"handlers": ["line"], "level": level.upper(), "propagate": False}
    config["loggers"]["gradserve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="gradserve", description="Serve the gradserve HTTP API.")
    parser.add_argument("--host", default=settings.host, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (default %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=settings.workers, help="worker processes (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        KeyRing.from_settings(settings)  # said here once, not by each worker's traceback
    except KeyFileError as exc:
        sys.exit(f"gradserve: {exc}")
    # several processes add their metrics up in a directory of their own
    with multiprocess_dir(args.workers if settings.metrics else 1):
        options: dict[str, Any] = {
            "factory": True,
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            # httptools with a bounded head, a head deadline and a bound on connections
            "http": "service.http.edge:EdgeProtocol",
            "log_level": settings.log_level,
            "log_config": log_config(settings.log_level),
            "access_log": False,
            "timeout_graceful_shutdown": settings.shutdown_grace_s,
        }
        if args.workers == 1:
            uvicorn.run("service.http.app:create_app", **options)
        else:
            config = uvicorn.Config("service.http.app:create_app", **options)
            Supervisor(config, sockets=[config.bind_socket()]).run()


class Supervisor(Multiprocess):
    """uvicorn's supervisor of `--workers N` processes, which stops listening as soon as it is
    told to stop.

    The processes share one listening socket. On SIGTERM each closes its own copy, but
    uvicorn's supervisor kept its copy until they had all exited, so the kernel went on
    completing connections that no process would accept: they hung until the last process
    exited, and were reset then (3-9 s). `shutdown` of a listening socket (Linux) stops it
    listening for every process that holds it: new connections are refused at once, as with
    one process, while the requests in flight drain."""

    def handle_term(self) -> None:
        self.stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self.stop_listening()
        super().handle_int()

    def stop_listening(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError as exc:  # not Linux, or already shut
                logging.getLogger("gradserve").warning("the listening socket stays open: %s", exc)
