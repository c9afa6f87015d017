"""Serve the API with uvicorn: what `gradserve` and `python -m service` run (service.__main__
imports this only once the server extra is known to be installed)."""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

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
        uvicorn.run(
            "service.http.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=settings.log_level,
            log_config=log_config(settings.log_level),
            access_log=False,
            timeout_graceful_shutdown=settings.shutdown_grace_s,
        )
