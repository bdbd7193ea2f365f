"""deployments/k8s/ without a cluster: every manifest is valid against the Kubernetes JSON schemas (strict: an unknown
or misspelt field fails), checked offline with the schemas `kubernetes-validate` ships, and the facts the server
depends on hold. The image build (`deployments/Dockerfile --target serve`) is not exercised here: no Docker daemon."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deployments" / "k8s"
SERVE_COMMAND = ["detops", "serve", "--host", "0.0.0.0", "--port", "8000", "--model", "champion"]


def _resources() -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.rglob("*.yaml")):  # monitoring/: applied in the adapter's namespace
        out.extend((path, doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return out


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _resources() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {K8S}, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("path_doc", _resources(), ids=lambda p: f"{p[0].name}:{p[1]['kind']}")
def test_manifest_is_valid_against_the_kubernetes_schema(path_doc: tuple[Path, dict[str, Any]]) -> None:
    import kubernetes_validate

    path, doc = path_doc
    version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{path.name} ({doc['kind']}) is not a valid Kubernetes {version} object at "
                    f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_the_schemas_catch_a_misspelt_field() -> None:
    """The check is real: strict schemas refuse a field Kubernetes does not know and a value of the wrong type."""
    import copy

    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    bad = copy.deepcopy(_one("Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)
    bad = copy.deepcopy(_one("Deployment"))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def _serve_command(command: list[str]) -> tuple[list[str], dict[str, str]]:
    """`detops [--set k=v ...] serve ...` as (the serve command without the global options, the --set overrides)."""
    assert command[0] == "detops" and "serve" in command, command
    at = command.index("serve")
    options = command[1:at]
    assert options[::2] == ["--set"] * (len(options) // 2) and len(options) % 2 == 0, options
    return ["detops", *command[at:]], dict(o.split("=", 1) for o in options[1::2])


def test_deployment_runs_the_champion_server_bound_to_the_pod_address() -> None:
    container = _container()
    command, overrides = _serve_command([*container.get("command", []), *container.get("args", [])])
    assert command == SERVE_COMMAND  # 0.0.0.0: the CLI's default 127.0.0.1 would be unreachable in a pod
    port = int(command[command.index("--port") + 1])
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["http"]["containerPort"] == port
    # ONNX Runtime's threads match the pod's CPU limit (the default would size them on the node's cores).
    assert overrides["serve.threads"] == str(container["resources"]["limits"]["cpu"])
    from detops.config import load_params

    load_params(REPO / "params.yaml", [f"{k}={v}" for k, v in overrides.items()])  # the overrides are valid params


def test_probes_resources_and_replicas() -> None:
    deployment = _one("Deployment")
    container = _container()
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert _one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
        assert container[probe]["httpGet"]["port"] in ("http", 8000), probe
    assert "livenessProbe" in container
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    # A new image only replaces a pod once the new one is ready: no capacity is lost during a rollout.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_tracking_uri_and_api_key_come_from_a_secret() -> None:
    env = {e["name"]: e for e in _container()["env"]}
    for name in ("MLFLOW_TRACKING_URI", "DETOPS_SERVE_API_KEY"):
        assert "value" not in env[name], f"{name} must not be written in the manifest"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "detops-serve" and ref["key"]
        assert not ref.get("optional", False), f"{name} is required: a pod without it must not start"
    # No credential is written in any manifest, and no Secret ships with them (it is created by hand).
    assert not [doc for _, doc in _resources() if doc["kind"] == "Secret"]


def test_service_selects_the_deployment_pods_on_the_container_port() -> None:
    deployment, service = _one("Deployment"), _one("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector and selector.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in container_ports or target in container_ports.values(), port
    budget = _one("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # A drain can still evict one.
    assert budget["spec"]["minAvailable"] < _one("HorizontalPodAutoscaler")["spec"]["minReplicas"]


def _quantity(text: str) -> float:
    """A Kubernetes quantity in bytes ("3Gi", "1536Mi")."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|)", text).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def test_hpa_scales_the_deployment_on_a_metric_the_server_exports_through_the_adapter_rule() -> None:
    """The HPA's per-pod metric is the adapter rule's output, the rule reads a series the server really exports
    (a gauge in its /metrics), and the target asks for a replica before a pod queues a whole batch."""
    from detops.config import load_params
    from detops.serving.metrics import render

    hpa, deployment = _one("HorizontalPodAutoscaler"), _one("Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    name = metric["pods"]["metric"]["name"]
    config = yaml.safe_load(_one("ConfigMap")["data"]["config.yaml"])
    (rule,) = [r for r in config["rules"] if r["name"]["as"] == name]
    series = re.match(r"(\w+)\{", rule["seriesQuery"])
    assert series is not None and re.fullmatch(rule["name"]["matches"], series.group(1))
    assert {"namespace", "pod"} <= set(rule["resources"]["overrides"])  # a per-pod metric
    assert f"# TYPE {series.group(1)} gauge" in render()[0].decode()  # what /metrics exports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == _container()["ports"][0]["containerPort"]
    serve = load_params(REPO / "params.yaml", []).serve
    assert 0 < float(metric["pods"]["target"]["averageValue"]) <= serve.max_batch_size


def test_a_stopping_pod_has_time_for_its_requests_and_its_capture_seal() -> None:
    """SIGKILL comes terminationGracePeriodSeconds after the preStop hook starts: the hook's sleep, a request's
    longest wait (serve.timeout) and the capture writer's close must fit in it. And the capture queue, bounded in
    bytes, is a small part of the pod's memory limit."""
    from detops.config import load_params
    from detops.serving.capture import CLOSE_TIMEOUT_S

    serve = load_params(REPO / "params.yaml", []).serve
    pod = _one("Deployment")["spec"]["template"]["spec"]
    command = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= float(command[1]) + serve.timeout + CLOSE_TIMEOUT_S
    limit = _quantity(_container()["resources"]["limits"]["memory"])
    assert serve.capture_queue_mb * 2**20 <= limit / 8


def test_dockerfile_has_a_serve_target_running_the_server() -> None:
    text = (REPO / "deployments" / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE | re.IGNORECASE)
    assert "serve" in stages
    serve = re.split(r"^FROM\s", text, flags=re.MULTILINE)[stages.index("serve") + 1]
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", serve, flags=re.MULTILINE)
    assert cmd is not None, "the serve stage has no exec-form CMD"
    assert yaml.safe_load(cmd.group(1)) == SERVE_COMMAND
    assert re.search(r"^EXPOSE\s+8000\b", serve, flags=re.MULTILINE)
    # only what serving imports (test_serve.py checks the group against a running server): no torch
    assert "pip install --no-deps . && pip install --group serve" in serve and "TORCH" not in serve
    assert "train" in stages  # the flow-run image of a Kubernetes pool (deploy.image)
    # A build without --target is still the Prefect worker image (README, work pools): the worker is the last stage.
    assert stages[-1] != "serve" and "prefect worker start" in re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
