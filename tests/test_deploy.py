"""The deployment manifests are valid Kubernetes and use only flags and variables the servers accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from animator.settings import AnimatorSettings
from captioner.settings import CaptionerSettings
from imagewire_serving import settings as settings_module
from imagewire_serving.frontdoor import KUBERNETES
from imagewire_serving.frontdoor.config import CONFIG_KEY, CONFIGMAP_NAME
from imagewire_serving.metrics import Metrics

MANIFESTS = sorted((Path(__file__).resolve().parent.parent / "deploy" / "kubernetes").glob("*.yaml"))
SETTINGS = {"imagewire-captioner": CaptionerSettings, "imagewire-animator": AnimatorSettings}


def documents() -> list[tuple[Path, dict[str, object]]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(("path", "doc"), documents(), ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_manifest_is_valid_kubernetes(path: Path, doc: dict[str, object]) -> None:
    kubernetes_validate.validate(doc, "1.33.0", strict=True)


def servers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) of every imagewire server the manifests run."""
    return [(doc, container) for _, doc in documents() if doc["kind"] == "Deployment"
            for container in doc["spec"]["template"]["spec"]["containers"]
            if container.get("command", [""])[0] in SETTINGS]


@pytest.mark.parametrize(("deployment", "container"), servers(), ids=lambda v: v["name"] if "image" in v else "")
def test_container_flags_and_environment_parse(deployment: dict[str, Any], container: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (command,) = container["command"]
    # The pods run on GPU nodes: this machine need not have one for their flags to parse.
    monkeypatch.setattr(settings_module, "gpu_device_nodes", lambda: True)
    for variable in container.get("env", []):
        monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
    settings = SETTINGS[command].from_args(container["args"])
    assert settings.server.host == "0.0.0.0" and settings.server.device == "cuda:0"
    assert settings.server.metrics_port is not None and settings.server.log_format == "json"
    assert settings.server.auth_token == "from-a-secret"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.server.metrics_port
    assert container["startupProbe"]["grpc"]["port"] == ports["grpc"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.server.grace_s


def kinds(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def test_every_disruption_budget_and_autoscaler_has_its_deployment() -> None:
    deployments = kinds("Deployment")
    for budget in kinds("PodDisruptionBudget").values():
        labels = budget["spec"]["selector"]["matchLabels"]
        assert any(labels.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values())
    autoscalers = kinds("HorizontalPodAutoscaler")
    assert set(autoscalers) == {"imagewire-captioner", "imagewire-animator"}
    for name, autoscaler in autoscalers.items():
        assert autoscaler["spec"]["scaleTargetRef"]["name"] == name and "replicas" not in deployments[name]["spec"]
        (metric,) = autoscaler["spec"]["metrics"]
        # The servers' own gauge (served per pod by the Prometheus adapter).
        assert metric["pods"]["metric"]["name"] == "imagewire_queue_depth"
        assert "imagewire_queue_depth" in {family.name for family in Metrics().registry.collect()}
    assert {budget for budget in kinds("PodDisruptionBudget")} == {*autoscalers, "imagewire-envoy"}


def test_envoy_runs_the_rendered_config_against_the_headless_services() -> None:
    deployment = kinds("Deployment")["imagewire-envoy"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (volume,) = spec["volumes"]
    (mount,) = container["volumeMounts"]
    assert volume["configMap"]["name"] == kinds("ConfigMap")[CONFIGMAP_NAME]["metadata"]["name"]
    assert container["args"][:2] == ["-c", f"{mount['mountPath']}/{CONFIG_KEY}"] and mount["name"] == volume["name"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": KUBERNETES.listen_port, "stats": KUBERNETES.stats_port}
    # Each upstream is a headless Service (every pod an endpoint for STRICT_DNS) on the port it names.
    services = kinds("Service")
    for endpoint in (*KUBERNETES.captioners, *KUBERNETES.animators):
        name, _, port = endpoint.rpartition(":")
        assert services[name]["spec"]["clusterIP"] == "None"
        assert int(port) in {p["port"] for p in services[name]["spec"]["ports"]}
    # It drains for as long as the longest video may take.
    animator = kinds("Deployment")["imagewire-animator"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= animator["terminationGracePeriodSeconds"]
