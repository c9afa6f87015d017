"""`python -m service` (and the `gradserve` script): serve the API with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from service.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="gradserve", description="Serve the gradserve HTTP API.")
    parser.add_argument("--host", default=settings.host, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (default %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=settings.workers, help="worker processes (default %(default)s)"
    )
    args = parser.parse_args(argv)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
