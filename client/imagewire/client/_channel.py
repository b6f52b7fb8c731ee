"""Channel construction shared by the blocking and asyncio clients: message limits, keepalive, TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from imagewire.limits import MAX_IMAGE_BYTES, MAX_REQUEST_OVERHEAD_BYTES

# The largest image plus the rest of the request message.
MAX_SEND_BYTES = MAX_IMAGE_BYTES + MAX_REQUEST_OVERHEAD_BYTES
# Video chunks are at most 1 MiB; other responses are small. Anything far larger is a misbehaving server.
MAX_RECEIVE_BYTES = 8 * 1024 * 1024


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


def channel_options(tls: TlsConfig | None) -> list[tuple[str, int | str]]:
    """The options of every client channel."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        # Long animate streams sit idle between chunks; keepalive notices a dead peer.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        # Spread calls over every address a dns:/// or ipv4: target resolves to.
        ("grpc.lb_policy_name", "round_robin"),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def sync_channel(target: str, tls: TlsConfig | None) -> grpc.Channel:
    """A blocking channel to ``target``: plaintext when ``tls`` is None."""
    options = channel_options(tls)
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.credentials(), options=options)


def aio_channel(target: str, tls: TlsConfig | None) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: plaintext when ``tls`` is None."""
    options = channel_options(tls)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options)
