"""Write the test-time copy of deploy/kubernetes that `podman kube play` runs (.ci/kube).

    python .ci/kube_manifests.py OUT.yaml IMAGE HOST_PORT KEYS_FILE

The Secret (from KEYS_FILE, one key a line, as `kubectl create secret generic --from-file`
would make it), the ConfigMap, the Deployment and the Service, each read from the manifests
and changed only where podman 4.3.1 needs it (../shared/CONTAINER.md) or the test must:

- podman bugs: a `secret` volume without `optional:` crashes podman (upstream #16636), so
  `optional: false`; a Secret's `data` is mounted as written, not decoded from base64, so the
  copy's `data` holds the file itself (tried here: base64 of it mounts the base64 text);
- the test's choices: one replica (each containerPort is published on the host), the image CI
  built, a free host port, and a shorter shutdown grace (GRADSERVE_SHUTDOWN_GRACE_S 6, well
  within terminationGracePeriodSeconds) so that a request certain to outlast it stays cheap.
Everything else (the probes, the security context, the volumes, the settings) is as written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: the shutdown grace the played pod gets (see the module's docstring)
GRACE_S = 6


def secret(keys: bytes, deployment: dict[str, Any]) -> dict[str, Any]:
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    mount = next(e["value"] for e in _container(deployment)["env"] if e["name"] == "GRADSERVE_API_KEYS_FILE")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": volume["secret"]["secretName"]},
        # podman mounts `data` as written, never decoded from base64: the file itself stands
        # there (a cluster would take base64.b64encode(keys))
        "data": {Path(mount).name: keys.decode()},
    }


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def played(image: str, host_port: int, keys: bytes) -> list[dict[str, Any]]:
    configmap = yaml.safe_load((MANIFESTS / "configmap.yaml").read_text())
    deployment = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    service = yaml.safe_load((MANIFESTS / "service.yaml").read_text())
    for doc in (configmap, deployment, service):
        doc["metadata"].pop("namespace", None)  # podman has none
    configmap["data"]["GRADSERVE_SHUTDOWN_GRACE_S"] = str(GRACE_S)
    # the drain's training must outlast the grace on any machine: minutes of work, admitted
    configmap["data"]["GRADSERVE_MAX_WORK"] = str(10**15)
    configmap["data"]["GRADSERVE_TIMEOUT_S"] = "3600"
    deployment["spec"]["replicas"] = 1
    container = _container(deployment)
    container["image"] = image
    for port in container["ports"]:
        port["hostPort"] = host_port
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        if "secret" in volume:
            volume["secret"]["optional"] = False
    return [secret(keys, deployment), configmap, deployment, service]


def main() -> None:
    out, image, host_port, keys_file = sys.argv[1:5]
    docs = played(image, int(host_port), Path(keys_file).read_bytes())
    Path(out).write_text(yaml.safe_dump_all(docs, sort_keys=False))


if __name__ == "__main__":
    main()
