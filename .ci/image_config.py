"""Check what a built image declares (buildah inspect's JSON).

Prints its command, one word a line, then its health check's command on one line, tab-separated;
with `env`, its environment, one NAME=VALUE a line.
"""

from __future__ import annotations

import json
import sys


def main(path: str, want: str = "command") -> None:
    with open(path) as file:
        image = json.load(file)
    config = image["Docker"]["config"]
    if want == "env":
        print("\n".join(config.get("Env") or []))
        return
    user = config.get("User", "")
    health = (config.get("Healthcheck") or {}).get("Test") or []
    command = config.get("Cmd") or []
    print(f"user={user!r} cmd={command} healthcheck={health}", file=sys.stderr)
    if user.split(":")[0] in ("", "0", "root"):
        sys.exit("the image runs as root")
    if not any("/healthz" in part for part in health):
        sys.exit("the image has no HEALTHCHECK on /healthz")
    if not command or command[0].startswith("/bin/sh"):
        sys.exit("the image's CMD is not in exec form")
    print("\n".join(command))
    print("\t".join(health[1:]))  # the health check's own command, last


if __name__ == "__main__":
    main(*sys.argv[1:])
