"""The container and Kubernetes files: linted and validated offline.

Building and running the image is `.ci/container` (buildah, a few minutes), which CI runs
after the test suite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import __version__
from service.http.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_dockerfile_passes_hadolint_at_warning_level() -> None:
    run = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_dockerfile_declares_what_production_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2  # a builder stage and the final one
    assert re.search(r"^USER \d+:\d+$", text, re.MULTILINE)  # a numeric, non-root user
    assert re.search(r"^HEALTHCHECK .*\n.*urllib\.request.*/healthz", text, re.MULTILINE)
    assert re.search(r'^CMD \["gradserve", "--host", "0\.0\.0\.0"\]$', text, re.MULTILINE)
    for setting in ("WEB_CONCURRENCY=1", "OPENBLAS_NUM_THREADS=1", "GRADSERVE_SHUTDOWN_GRACE_S="):
        assert setting in text


def test_the_manifests_validate_against_the_kubernetes_schemas() -> None:
    run = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *map(str, MANIFESTS)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("passed") == len(MANIFESTS) == 6


def manifest(kind: str) -> dict[str, Any]:
    for path in MANIFESTS:
        document = yaml.safe_load(path.read_text())
        if document["kind"] == kind:
            return document  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind}")


def test_the_deployment_is_locked_down_and_probed() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    env = {e["name"]: e for e in container["env"]}
    assert env["WEB_CONCURRENCY"]["value"] == "1"
    # the keys from a Secret mounted as a directory (updated in place, so keys rotate)
    keys_file = Path(env["GRADSERVE_API_KEYS_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    assert keys_file.parent == Path(mount["mountPath"])
    assert "subPath" not in mount  # (a file mounted by subPath is never updated)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "gradserve-api-keys"
    assert "GRADSERVE_API_KEY" not in env
    assert container["envFrom"] == [{"configMapRef": {"name": "gradserve"}}]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
    grace = int(manifest("ConfigMap")["data"]["GRADSERVE_SHUTDOWN_GRACE_S"])
    assert "preStop" not in str(container.get("lifecycle", ""))  # (its time would count too)
    assert pod["terminationGracePeriodSeconds"] >= grace + 5  # the grace, the exit, and room


def test_the_autoscaler_and_disruption_budget_target_the_deployment() -> None:
    hpa = manifest("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "gradserve"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    labels = manifest("Deployment")["spec"]["selector"]["matchLabels"]
    assert manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    assert manifest("Service")["spec"]["selector"] == labels
    settings = manifest("ConfigMap")["data"]
    assert all(key.startswith("GRADSERVE_") for key in settings)


def test_everything_lives_in_one_namespace_and_the_kustomization_lists_it_all() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    assert manifest("Namespace")["metadata"]["name"] == kustomization["namespace"] == "gradserve"
    for path in MANIFESTS:
        document = yaml.safe_load(path.read_text())
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "gradserve", path.name


def test_the_readme_builds_the_image_the_deployment_runs() -> None:
    """One tag, the package's version, from `docker build` to the Deployment."""
    image = f"gradserve:{__version__}"
    (container,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    (kustomized,) = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["images"]
    assert f"{kustomized['newName']}:{kustomized['newTag']}" == image
    readme = (ROOT / "README.md").read_text()
    builds = re.findall(r"docker build -t (\S+)", readme)
    assert builds
    assert set(builds) == {image}
    assert "kubectl apply -k deploy/kubernetes" in readme
    assert "kubectl -n gradserve port-forward service/gradserve" in readme
    assert "metrics-server" in readme


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_every_manifest_into_the_namespace(tmp_path: Path) -> None:
    run = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    documents = list(yaml.safe_load_all(run.stdout))
    assert sorted(d["kind"] for d in documents) == sorted(
        yaml.safe_load(p.read_text())["kind"] for p in MANIFESTS
    )
    assert all(d["metadata"].get("namespace") == "gradserve" for d in documents if d["kind"] != "Namespace")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(run.stdout)
    check = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(rendered)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_finds_the_pods_and_their_metrics() -> None:
    template = manifest("Deployment")["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    # the ServiceMonitor, commented out in service.yaml (its CRD may not be installed)
    text = (KUBERNETES / "service.yaml").read_text()
    commented = text[text.index("# apiVersion: monitoring.coreos.com/v1") :]
    monitor = yaml.safe_load(
        "\n".join(line.removeprefix("#").removeprefix(" ") for line in commented.splitlines())
    )
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == manifest("Service")["metadata"]["labels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == manifest("Service")["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["name"] == "gradserve-api-keys"


def test_the_queue_scaling_overlay_patches_the_hpa_onto_a_metric_the_adapter_serves(tmp_path: Path) -> None:
    overlay = ROOT / "deploy" / "scale-on-queue"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../kubernetes"]
    (patch,) = kustomization["patches"]
    assert patch["target"]["kind"] == "HorizontalPodAutoscaler"
    assert patch["target"]["name"] == manifest("HorizontalPodAutoscaler")["metadata"]["name"]
    hpa = manifest("HorizontalPodAutoscaler")
    for op in yaml.safe_load((overlay / patch["path"]).read_text()):  # (JSON patch: replace only)
        assert op["op"] == "replace"
        *parents, last = op["path"].strip("/").split("/")
        node = hpa
        for part in parents:
            node = node[part]
        assert last in node
        node[last] = op["value"]
    patched = tmp_path / "hpa.yaml"
    patched.write_text(yaml.safe_dump(hpa))
    run = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(patched)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"  # CPU still counts
    wanted = kinds["Pods"]["pods"]["metric"]["name"]
    # the adapter's rule serves that name, from a series the service exports
    (rule,) = yaml.safe_load((overlay / "prometheus-adapter.yaml").read_text())["rules"]["custom"]
    assert rule["name"]["as"] == wanted
    series = rule["seriesQuery"].partition("{")[0].strip("'")
    exported = {family.name for family in Metrics([], [], []).registry.collect()}
    assert series in exported
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_queue_scaling_overlay() -> None:
    run = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "scale-on-queue")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    (hpa,) = [d for d in yaml.safe_load_all(run.stdout) if d["kind"] == "HorizontalPodAutoscaler"]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]


def test_the_readme_guide_creates_the_secret_before_the_pods_that_need_it() -> None:
    """The quick start applied the manifests and waited on the rollout, with the Secret the pods
    mount a paragraph later: the pods never started."""
    readme = (ROOT / "README.md").read_text()
    guide = readme[readme.index("kind load docker-image") :]
    namespace = guide.index("kubectl apply -f deploy/kubernetes/namespace.yaml")
    secret = guide.index("create secret generic gradserve-api-keys")
    apply = guide.index("kubectl apply -k deploy/kubernetes/")
    rollout = guide.index("rollout status deployment/gradserve")
    assert namespace < secret < apply < rollout
    volume = next(v for v in manifest("Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] in guide[secret : secret + 80]
