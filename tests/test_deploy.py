"""The deployment manifests are valid Kubernetes and use only flags and variables the servers accept."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from animator.settings import AnimatorSettings
from captioner.settings import CaptionerSettings

MANIFESTS = sorted((Path(__file__).resolve().parent.parent / "deploy" / "kubernetes").glob("*.yaml"))
SETTINGS = {"imagewire-captioner": CaptionerSettings, "imagewire-animator": AnimatorSettings}


def documents() -> list[tuple[Path, dict[str, object]]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(("path", "doc"), documents(), ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_manifest_is_valid_kubernetes(path: Path, doc: dict[str, object]) -> None:
    kubernetes_validate.validate(doc, "1.33.0", strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_container_flags_and_environment_parse(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = [d for p, d in documents() if p == path and d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:  # type: ignore[index]
            (command,) = container["command"]
            for variable in container.get("env", []):
                monkeypatch.setenv(variable["name"], variable.get("value", "from-a-secret"))
            settings = SETTINGS[command].from_args(container["args"])
            assert settings.server.host == "0.0.0.0" and settings.server.device == "cuda:0"
            assert settings.server.metrics_port is not None and settings.server.log_format == "json"
            assert settings.server.auth_token == "from-a-secret"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == settings.server.metrics_port
            assert container["startupProbe"]["grpc"]["port"] == ports["grpc"]
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]  # type: ignore[index]
            assert grace > settings.server.grace_s
