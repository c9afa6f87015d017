"""Run inside a mount namespace whose /dev/shm is 12 MiB (tests/test_transport.py starts it):
a live server takes four clients posting 6 MB bodies at once, and prints what they got."""

from __future__ import annotations

import json
import threading

import httpx

from service.launcher import start_server
from tests.support import one_layer_body

JSON = {"content-type": "application/json"}


def main() -> None:
    body = one_layer_body(400, 1500)
    # four clients, fewer slots: the others wait for one however slow the machine (a 503 after
    # the default 2 s in the queue is the contract on a loaded machine, not what is tested here)
    server = start_server({"GRADSERVE_LOG_LEVEL": "warning", "GRADSERVE_QUEUE_TIMEOUT_S": "300"})
    statuses: list[int | str] = []

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            for _ in range(5):
                try:
                    r = http.post(server.url + "/v1/gradients", content=body, headers=JSON)
                    statuses.append(r.status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)

    try:
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alive = server.proc.poll() is None
    finally:
        server.stop()
    print(json.dumps({"body_bytes": len(body), "statuses": statuses, "alive": alive}))


if __name__ == "__main__":
    main()
