"""What .ci/kube checks of the pod `podman kube play` started from deploy/kubernetes.

    python .ci/kube_check.py PLAYED.yaml URL KEYS_FILE

1. ready: the readiness probe's own path (read from the Deployment) answers 200; podman turns
   probes into health checks that never run without systemd, so this polls it;
2. a gradient of the seed's chain through the published port, with a key from the Secret
   (and a 401 without one);
3. a rotated key: the Secret's mounted file rewritten on the host, as the kubelet does when
   the Secret changes; the new key is accepted and the removed one refused, with no restart;
4. taking the pod down drains it: a request still computing when the shutdown grace ends is
   answered 503 `shutting-down`, and the container stops within terminationGracePeriodSeconds
   (stopped as the kubelet does, then `podman kube down`: see main).
Each step prints how long it took.
"""

from __future__ import annotations

import json
import math
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from client import Client, mlp, single_units
from service.endpoints.selfcheck import chain_gradients


def step(name: str, started: float) -> None:
    print(f"kube: {name}: ok ({time.monotonic() - started:.1f} s)", flush=True)


def poll(what: str, ok: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ok():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"kube: {what} not within {seconds} s")
        time.sleep(0.25)


def chain_answer(url: str, key: str) -> list[float]:
    x, y, w1, w2, w3 = 1.5, 0.25, 0.5, -0.3, 0.8
    chain = single_units({"x->j": w1, "j->k": w2, "k->o": w3}, inputs=["x"], outputs=["o"])
    with Client(url, api_key=key, max_retries=0, timeout=10) as gs:
        got = gs.gradients(chain, {"inputs": {"x": [x]}, "targets": {"o": [y]}}).gradients.weights
    values = [float(w.value) for w in got]  # type: ignore[arg-type]
    expected = chain_gradients(x, y, w1, w2, w3)
    assert all(math.isclose(g, e, rel_tol=1e-12) for g, e in zip(values, expected, strict=True)), values
    return values


def status(url: str, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"network": {"units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}],
                        "weights": [{"source": "x", "target": "o", "value": 1.0}]},
            "samples": {"inputs": {"x": [1.0]}}}  # fmt: skip
    return httpx.post(f"{url}/v1/forward", json=body, headers=headers, timeout=10).status_code


def in_use(metrics: str) -> bool:
    """Whether /metrics shows a computation slot in use."""
    return any(
        line.split()[0] == "gradserve_slots_in_use" and float(line.split()[1]) >= 1
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    )


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout


def container_name(container: dict[str, Any]) -> str:
    """podman's name of the played container: <deployment>-pod-0-<container>."""
    names = [n for n in podman("ps", "--format", "{{.Names}}").split() if n.endswith("-" + container["name"])]
    played = [n for n in names if "-pod-" in n]
    if len(played) != 1:
        raise SystemExit(f"kube: not one running container named *-pod-*-{container['name']}: {names}")
    return played[0]


def keys_file_on_host(container: dict[str, Any]) -> Path:
    """The host's copy of the Secret's file that the container sees at GRADSERVE_API_KEYS_FILE."""
    inside = Path(next(e["value"] for e in container["env"] if e["name"] == "GRADSERVE_API_KEYS_FILE"))
    for ctr in [container_name(container)]:
        for mount in json.loads(podman("inspect", ctr, "--format", "{{json .Mounts}}")):
            if mount["Destination"] == str(inside.parent):
                return Path(mount["Source"]) / inside.name
            if mount["Destination"] == str(inside):
                return Path(mount["Source"])
    raise SystemExit(f"kube: no container mounts {inside}")


def main() -> None:
    played, url, keys_path = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    docs = list(yaml.safe_load_all(played.read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    keys = keys_path.read_text().split()

    started = time.monotonic()
    ready = container["readinessProbe"]["httpGet"]["path"]
    poll(f"{ready} 200", lambda: httpx.get(url + ready, timeout=2).status_code == 200, 180)
    step(f"the pod is ready ({ready})", started)

    started = time.monotonic()
    print(f"kube: the chain's gradients through the published port: {chain_answer(url, keys[0])}")
    assert status(url, None) == 401
    step("a gradient with a key from the Secret, a 401 without one", started)

    started = time.monotonic()
    new = secrets.token_hex(24)
    on_host = keys_file_on_host(container)
    text = on_host.read_text()
    assert text.split() == keys, f"the mounted file holds {text!r}, not the Secret's keys"
    swap = on_host.with_name(on_host.name + ".new")
    swap.write_text(new + "\n")
    swap.replace(on_host)  # atomically, as the kubelet swaps a Secret's files
    poll("the rotated key", lambda: status(url, new) == 200 and status(url, keys[0]) == 401, 30)
    step("a key rotated in the Secret's file is honoured (the old one refused) with no restart", started)

    started = time.monotonic()
    grace = float(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["GRADSERVE_SHUTDOWN_GRACE_S"])
    answers: list[httpx.Response] = []
    # a training estimated at about half the work limit (~16 s on one core): it outlasts the grace
    net = mlp([256, 512, 512, 10], seed=0)
    rows = 512
    sgd = {
        "network": net.model_dump(mode="json", exclude_none=True),
        "samples": {"inputs": {"input": [[0.5] * 256] * rows}, "targets": {"output": [[0.1] * 10] * rows}},
        "learning_rate": 0.001,
        "epochs": 10_000,  # minutes on any machine (150 took 6 s on a quiet one: the grace)
    }

    failed: list[str] = []

    def long_request() -> None:
        try:
            answers.append(
                httpx.post(f"{url}/v1/sgd", json=sgd, headers={"authorization": f"Bearer {new}"}, timeout=120)
            )
        except httpx.HTTPError as exc:
            failed.append(f"{time.monotonic() - down:.1f} s after kube down: {exc!r}")

    down = math.inf
    worker = threading.Thread(target=long_request)
    worker.start()
    metrics = {"authorization": f"Bearer {new}"}
    poll(
        "the long request computing",
        lambda: not answers and in_use(httpx.get(f"{url}/metrics", headers=metrics).text),
        60,
    )
    time.sleep(1)  # computing for a while: its body read, its worker busy
    assert not answers, f"the long request was answered at once: {answers[0].text[:300]}"
    print("kube: a long training computing; the pod taken down", flush=True)
    down = time.monotonic()
    # as the kubelet deletes a pod: SIGTERM to its containers, SIGKILL past the grace period,
    # the pod's network last. podman 4.3.1's `kube down` tears the network down with the
    # containers (tried here: a request in flight was cut 0.6 s after, before the server even
    # logged its shutdown), so the container is stopped first, then the pod taken down
    limit = pod["terminationGracePeriodSeconds"]
    subprocess.run(
        ["podman", "stop", "--time", str(limit), container_name(container)], check=True, capture_output=True
    )
    took = time.monotonic() - down
    subprocess.run(["podman", "kube", "down", str(played)], check=True, capture_output=True)
    worker.join(30)
    assert answers, f"the request in flight got no answer ({failed})"
    answer = answers[0]
    assert answer.status_code == 503, (answer.status_code, answer.text[:300])
    assert answer.json()["type"] == "urn:gradserve:problem:shutting-down", answer.text
    assert took < limit, f"kube down took {took:.1f} s, past terminationGracePeriodSeconds {limit}"
    print(
        f"kube: the pod stopped {took:.1f} s after SIGTERM "
        f"(grace {grace:g} s, terminationGracePeriodSeconds {limit})"
    )
    step(
        "the pod taken down answers the request in flight 503 shutting-down, stopping within the grace",
        started,
    )


if __name__ == "__main__":
    main()
