"""The Envoy front door's configuration: one template (``deploy/envoy/envoy.template.yaml``) rendered with the
endpoints and ports of where it runs.

The tests and the benchmarks render it for replicas on loopback ports; Kubernetes gets it rendered for the
headless Services (:data:`KUBERNETES`) as the ConfigMap ``deploy/kubernetes/envoy-config.yaml``, which a test
keeps equal to :func:`configmap`. Only ``string.Template`` substitution: the rendered file keeps the template's
comments, so the ConfigMap reads like the template.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEMPLATE = DEPLOY / "envoy" / "envoy.template.yaml"
CONFIGMAP = DEPLOY / "kubernetes" / "envoy-config.yaml"
CONFIGMAP_NAME = "imagewire-envoy"
CONFIG_KEY = "envoy.yaml"


@dataclass(frozen=True)
class FrontDoor:
    """Where the front door listens and which replicas it sends calls to.

    Endpoints are ``HOST:PORT``: an address, or a DNS name that resolves to every replica (STRICT_DNS; a
    headless Service's name in Kubernetes). Port 0 listens on any free port (the tests read the bound one from
    the admin interface).
    """

    captioners: Sequence[str]
    animators: Sequence[str]
    listen_address: str = "127.0.0.1"
    listen_port: int = 0
    stats_port: int = 0
    # The admin interface listens on 127.0.0.1 only; the stats listener exposes its read-only pages.
    admin_port: int = 9901
    # How often each replica's grpc.health.v1 status is checked.
    health_interval_s: float = 5.0
    # The origins whose pages may call through gRPC-Web (CORS), as a regular expression; any by default, since
    # the calls carry no cookies (a bearer token is sent explicitly). Narrow it to your site's origin.
    allow_origin: str = ".*"

    def values(self) -> dict[str, str]:
        """The template's substitutions."""
        return {
            "listen_address": self.listen_address,
            "listen_port": str(self.listen_port),
            "stats_port": str(self.stats_port),
            "admin_port": str(self.admin_port),
            "health_interval": f"{self.health_interval_s:g}s",
            "allow_origin": _origin_pattern(self.allow_origin),
            "captioner_endpoints": _endpoints(self.captioners),
            "animator_endpoints": _endpoints(self.animators),
        }


#: The front door in Kubernetes (deploy/kubernetes): the headless Services of the two Deployments.
KUBERNETES = FrontDoor(
    captioners=("imagewire-captioner:50051",),
    animators=("imagewire-animator:50052",),
    listen_address="0.0.0.0",
    listen_port=8080,
    stats_port=9902,
)


def _origin_pattern(pattern: str) -> str:
    """The CORS origin pattern, checked: a regular expression (Envoy's RE2 takes the common syntax Python's ``re``
    checks here), written into a single-quoted YAML scalar, so without quotes or line breaks."""
    if not pattern or any(character in pattern for character in "'\n\r"):
        raise ValueError(f"allow_origin {pattern!r}: a non-empty regular expression without quotes or line breaks")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"allow_origin {pattern!r} is not a regular expression: {error}") from None
    return pattern


def _endpoints(addresses: Sequence[str]) -> str:
    """A YAML flow sequence of Envoy LbEndpoints, one per ``HOST:PORT``."""
    items = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"an endpoint is HOST:PORT, not {address!r}")
        items.append(f"{{endpoint: {{address: {{socket_address: {{address: {host.strip('[]')}, "
                     f"port_value: {int(port)}}}}}}}}}")
    return "[" + ", ".join(items) + "]"


def render(front: FrontDoor) -> str:
    """The Envoy configuration (YAML) for ``front``."""
    return string.Template(TEMPLATE.read_text()).substitute(front.values())


def configmap(front: FrontDoor = KUBERNETES) -> str:
    """The ConfigMap holding the rendered configuration, as committed in deploy/kubernetes/envoy-config.yaml."""
    body = "".join(f"    {line}\n" if line.strip() else "\n" for line in render(front).splitlines())
    return (
        "# Generated from deploy/envoy/envoy.template.yaml by `python -m imagewire_serving.frontdoor --configmap`:\n"
        "# edit the template and regenerate (tests/test_frontdoor.py fails while the two differ).\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: {CONFIGMAP_NAME}\n"
        "  labels: {app.kubernetes.io/name: imagewire-envoy, app.kubernetes.io/part-of: imagewire}\n"
        "data:\n"
        f"  {CONFIG_KEY}: |\n"
        f"{body}"
    )
