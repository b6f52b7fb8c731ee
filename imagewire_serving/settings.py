"""Flags with environment fallbacks, and the settings every server shares.

Each flag ``--some-flag`` of a service with prefix ``IMAGEWIRE_CAPTIONER`` can also be set by the environment
variable ``IMAGEWIRE_CAPTIONER_SOME_FLAG``; an explicit flag wins.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewire_serving.device import validate_device_spec


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def env_name(prefix: str, flag: str) -> str:
    return f"{prefix}_{flag.lstrip('-').replace('-', '_').upper()}"


def env_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    env_prefix: str,
    type: Callable[[str], Any] = str,  # noqa: A002 - mirrors argparse
    default: Any = None,
    help: str = "",  # noqa: A002
    repeatable: bool = False,
    boolean: bool = False,
) -> None:
    """Add ``flag`` whose default comes from its environment variable (comma-separated when repeatable)."""
    variable = env_name(env_prefix, flag)
    raw = os.environ.get(variable)
    convert = _parse_bool if boolean else type
    if raw is not None and raw != "":
        try:
            default = [convert(part) for part in raw.split(",") if part] if repeatable else convert(raw)
        except ValueError as error:
            parser.error(f"{variable}={raw!r}: {error}")
    help_text = f"{help} [env {variable}]" + ("" if default in (None, [], ()) else f" (default: {default})")
    if boolean:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=bool(default), help=help_text)
    elif repeatable:
        parser.add_argument(flag, action="append", type=type, default=None, help=help_text)
        parser.set_defaults(**{flag.lstrip("-").replace("-", "_") + "_env_default": list(default or [])})
    else:
        parser.add_argument(flag, type=type, default=default, help=help_text)


def repeated(args: argparse.Namespace, dest: str) -> list[Any]:
    """The values of a repeatable env_option: the flags if given, else the environment's."""
    value = getattr(args, dest)
    return list(value) if value else list(getattr(args, dest + "_env_default", []))


@dataclass(frozen=True)
class ServerSettings:
    """What every imagewire server process needs, whatever it serves."""

    host: str = "127.0.0.1"
    port: int = 0
    device: str = "auto"
    models: tuple[str, ...] = ()
    reflection: bool = True
    grace_s: float = 30.0
    metrics_port: int | None = None
    auth_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    # Bound on RPCs the process accepts at once; past it grpc answers RESOURCE_EXHAUSTED immediately.
    max_concurrent_rpcs: int = 1024

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535, not {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"--metrics-port must be 0..65535, not {self.metrics_port}")
        validate_device_spec(self.device)
        if self.grace_s < 0:
            raise ValueError("--grace must be >= 0 seconds")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file not found: {path}")
        if self.log_format not in ("text", "json"):
            raise ValueError("--log-format must be text or json")
        if self.max_concurrent_rpcs < 1:
            raise ValueError("--max-concurrent-rpcs must be >= 1")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def add_server_arguments(parser: argparse.ArgumentParser, *, env_prefix: str, default_port: int) -> None:
    """The flags every server has: address, device, models, security, observability, shutdown."""

    def option(flag: str, **kwargs: Any) -> None:
        env_option(parser, flag, env_prefix=env_prefix, **kwargs)

    option("--host", default="127.0.0.1", help="address to listen on")
    option("--port", type=int, default=default_port, help="port to listen on; 0 picks a free port")
    option("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    option("--model", repeatable=True,
           help="model directory or hub id; repeat to serve several (none = the embedded default)")
    option("--reflection", boolean=True, default=True, help="serve gRPC server reflection")
    option("--grace", type=float, default=30.0, help="seconds in-flight calls get to finish on SIGTERM")
    option("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port")
    option("--auth-token", help="require 'authorization: Bearer TOKEN' on every call but health checks")
    option("--tls-cert", type=Path, help="PEM server certificate chain (enables TLS)")
    option("--tls-key", type=Path, help="PEM server private key")
    option("--tls-client-ca", type=Path, help="PEM CA bundle; require client certificates signed by it (mutual TLS)")
    option("--log-format", default="text", help="text or json")
    option("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    option("--max-concurrent-rpcs", type=int, default=1024, help="calls accepted at once before RESOURCE_EXHAUSTED")


def server_settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Build (and validate) the shared settings from parsed flags."""
    return ServerSettings(
        host=args.host,
        port=args.port,
        device=args.device,
        models=tuple(repeated(args, "model")),
        reflection=args.reflection,
        grace_s=args.grace,
        metrics_port=args.metrics_port,
        auth_token=args.auth_token or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        log_format=args.log_format,
        log_level=args.log_level.upper(),
        max_concurrent_rpcs=args.max_concurrent_rpcs,
    )
