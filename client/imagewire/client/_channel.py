"""Channel construction shared by the blocking and asyncio clients: the service config (balancing, health
checking, retries), message limits, keepalive, TLS."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from imagewire.limits import MAX_IMAGE_BYTES, MAX_REQUEST_OVERHEAD_BYTES

# The largest image plus the rest of the request message.
MAX_SEND_BYTES = MAX_IMAGE_BYTES + MAX_REQUEST_OVERHEAD_BYTES
# Video chunks are at most 1 MiB; other responses are small. Anything far larger is a misbehaving server.
MAX_RECEIVE_BYTES = 8 * 1024 * 1024
# gRPC's ceiling: a service config asking for more attempts gets 5.
MAX_ATTEMPTS = 5
DEFAULT_MAX_ATTEMPTS = 5


def check_target(target: str) -> str:
    """``target`` if it names a server, else ValueError: gRPC itself fails an empty target, or a scheme with no
    address (``dns:///``), only at the first call, and with UNKNOWN."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError("the target is empty: give host:port, dns:///name:port or ipv4:a:p,b:p")
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?/?", target.strip()):
        raise ValueError(f"the target {target!r} names no server: give host:port, dns:///name:port or ipv4:a:p")
    return target


def check_attempts(max_attempts: int) -> int:
    """``max_attempts`` if it is 1 (no retries) to 5, else ValueError."""
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise ValueError(f"max_attempts must be an integer from 1 (no retries) to {MAX_ATTEMPTS}, not {max_attempts!r}")
    return max_attempts


def service_config(service: str, max_attempts: int = DEFAULT_MAX_ATTEMPTS, *, health_check: bool = True) -> str:
    """The gRPC service config (JSON) of a channel to ``service`` (its full name, e.g.
    ``imagewire.caption.v1.CaptionService``); usable with any gRPC client as the ``grpc.service_config`` option.

    - ``round_robin`` spreads calls over every address the target resolves to (``dns:///``, ``ipv4:a,b``).
    - ``healthCheckConfig`` (unless ``health_check`` is False): each address is watched through
      ``grpc.health.v1.Health/Watch`` for ``service``; a replica that is loading or draining (NOT_SERVING) gets
      no new calls until it reports SERVING again. Turn it off for a target that is a proxy which checks the
      replicas' health itself, such as the Envoy front door: it answers no health checks of its own (gRPC then
      assumes it healthy, and logs that once per channel).
    - ``retryPolicy`` on UNAVAILABLE for every method of the service, with exponential backoff: gRPC retries an
      attempt only before its first response arrives (the servers answer headers with the first response), so
      Caption and ListModels are retried whenever a replica is loading, draining, or died mid-call, and a video
      stream only until its first event. ``max_attempts`` 1 turns retries off.
    - ``retryThrottling``: when attempts keep failing (the whole fleet is down), retries stop adding load; the
      bucket is large enough for a busy client's burst refused by one draining replica.
    """
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if health_check:
        config["healthCheckConfig"] = {"serviceName": service}
    if check_attempts(max_attempts) > 1:
        config["methodConfig"] = [{
            "name": [{"service": service}],
            "retryPolicy": {
                "maxAttempts": max_attempts,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
        config["retryThrottling"] = {"maxTokens": 1000, "tokenRatio": 0.1}
    return json.dumps(config)


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings: a CA bundle to verify the server, and for mutual TLS a client certificate and key (PEM files).

    With every field None the system's default roots verify the server.
    """

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    # Overrides the name checked against the server certificate (useful with IP targets).
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these files make."""
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("mutual TLS needs both client_cert and client_key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True)
class Balancing:
    """How a channel spreads and retries calls: see :func:`service_config`."""

    service: str
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    health_check: bool = True

    def __post_init__(self) -> None:
        check_attempts(self.max_attempts)

    def service_config(self) -> str:
        return service_config(self.service, self.max_attempts, health_check=self.health_check)


def channel_options(balancing: Balancing, tls: TlsConfig | None) -> list[tuple[str, int | str]]:
    """The options of every client channel."""
    options: list[tuple[str, int | str]] = [
        ("grpc.service_config", balancing.service_config()),
        ("grpc.enable_retries", 1),
        # A retried attempt resends the request, which gRPC keeps for that only up to this size (256 KiB by
        # default: most images would never be retried).
        ("grpc.per_rpc_retry_buffer_size", MAX_SEND_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        # Long animate streams sit idle between chunks; keepalive notices a dead peer.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        # A replica restarted on the same address is found again within seconds (gRPC's default backs off to 2
        # minutes while it is away).
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def sync_channel(target: str, balancing: Balancing, tls: TlsConfig | None) -> grpc.Channel:
    """A blocking channel to ``target``: plaintext when ``tls`` is None."""
    check_target(target)
    options = channel_options(balancing, tls)
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.credentials(), options=options)


def aio_channel(target: str, balancing: Balancing, tls: TlsConfig | None) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: plaintext when ``tls`` is None."""
    check_target(target)
    options = channel_options(balancing, tls)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options)
