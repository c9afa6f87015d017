"""`python -m service` (and the `gradserve` script): serve the API (service.serve).

The server's libraries come with the `server` extra; without them this says what to install
instead of a traceback.
"""

from __future__ import annotations

import sys

#: where the server's libraries come from: the package once published, or a checkout's source
INSTALL_SERVER = "pip install 'gradserve[server]' (from a checkout of the source: pip install '.[server]')"


def main(argv: list[str] | None = None) -> None:
    try:
        from service.serve import main as serve
    except ModuleNotFoundError as exc:
        missing = exc.name or "a module"
        if missing.partition(".")[0] == "service":
            raise  # the package itself is broken: no install hint would help
        sys.exit(
            f"gradserve: the server needs the `server` extra ({missing} is not installed): {INSTALL_SERVER}"
        )
    serve(argv)


if __name__ == "__main__":
    main()
