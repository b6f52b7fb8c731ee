"""The ``imagewire`` command's shared flags: targets, deadlines, retries, TLS, and one flag per optional request
field, its help taken from the field's comment in the proto (``REQUEST_FIELD_DOCS``, generated beside the typed
results)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from imagewire.animate.v1 import animate_types
from imagewire.caption.v1 import caption_types
from imagewire.client import TlsConfig
from imagewire.client._channel import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS, check_attempts, check_target
from imagewire.client._core import check_timeout
from imagewire.client._messages import optional_fields, python_type

DEFAULT_CAPTION_TARGET = "127.0.0.1:50051"
DEFAULT_ANIMATE_TARGET = "127.0.0.1:50052"
# Each service's target flag: its environment variable and its default.
TARGETS = {"caption": ("IMAGEWIRE_CAPTION_TARGET", DEFAULT_CAPTION_TARGET),
           "animate": ("IMAGEWIRE_ANIMATE_TARGET", DEFAULT_ANIMATE_TARGET)}
# The request fields' comments in the protos: the optional fields' flags take their help from them.
FIELD_DOCS = {**caption_types.REQUEST_FIELD_DOCS, **animate_types.REQUEST_FIELD_DOCS}


def add_optional_flags(parser: argparse.ArgumentParser, request: Descriptor, **defaults: Any) -> None:
    """One flag per optional request field (``num_frames`` -> ``--num-frames``), typed from the field, its help
    the field's comment in the proto."""
    for field in optional_fields(request):
        kind = python_type(field)
        # argparse's type=bool would read "false" as True: a boolean field gets --name / --no-name instead.
        typing: dict[str, Any] = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        default = defaults.get(field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", **typing, default=default,
                            help=field_help(field, None if default is None else str(default)))


def field_help(field: FieldDescriptor, default: str | None = None) -> str:
    """A request field's flag help: its comment, and what leaving the flag out means: ``default`` when the
    command has its own, else the server's default for the model (unless the comment says)."""
    text = FIELD_DOCS[field.full_name]
    if default is not None:
        text += f" (default: {default})"
    elif "default" not in text.lower() and "absent" not in text.lower():
        text += " (default: the server's default for the model; `imagewire models` lists it)"
    return text.replace("%", "%%")  # argparse formats help with %


def optional_values(args: argparse.Namespace, request: Descriptor) -> dict[str, Any]:
    return {field.name: getattr(args, field.name) for field in optional_fields(request)}


def add_connection_flags(parser: argparse.ArgumentParser, service: str) -> None:
    variable, fallback = TARGETS[service]
    parser.add_argument("--target", type=target, default=default_target(service),
                        help=f"gRPC target (default ${variable} or {fallback})")
    add_security_flags(parser, service)


def add_security_flags(parser: argparse.ArgumentParser, service: str | None) -> None:
    default = {"caption": "30", "animate": "900 for a video, 30 for the other calls", None: "30, 900 for a video"}
    parser.add_argument("--timeout", type=seconds,
                        help=f"deadline of each call in seconds (default {default[service]})")
    retries = parser.add_mutually_exclusive_group()
    retries.add_argument("--max-attempts", type=attempts, default=DEFAULT_MAX_ATTEMPTS,
                         help="attempts per call, retries on another replica included (1-5, default "
                              f"{DEFAULT_MAX_ATTEMPTS})")
    retries.add_argument("--no-retry", dest="max_attempts", action="store_const", const=1,
                         help="never retry a call (--max-attempts 1)")
    parser.add_argument("--no-health-check", dest="health_check", action="store_false",
                        help="do not health-check the target's replicas (a proxy such as Envoy does it)")
    parser.add_argument("--auth-token", default=os.environ.get("IMAGEWIRE_AUTH_TOKEN"),
                        help="bearer token (default $IMAGEWIRE_AUTH_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's trusted roots (default: "
                        "plaintext)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate to verify the server (implies --tls; default: "
                        "the system's roots)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS (default: none)")
    parser.add_argument("--tls-key", type=Path, help="client private key for mutual TLS (default: none)")
    parser.add_argument("--tls-server-name", help="expected name in the server certificate (default: the target's "
                        "host)")


def target(text: str) -> str:
    """``--target``'s type: a gRPC target that names a server (else a usage error, exit 2)."""
    try:
        return check_target(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def seconds(text: str) -> float:
    """``--timeout``'s type: a positive finite number of seconds (else a usage error, exit 2)."""
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}") from None


def attempts(text: str) -> int:
    """``--max-attempts``' type: 1 to 5."""
    try:
        return check_attempts(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 (no retries) to {MAX_ATTEMPTS}, "
                                         f"not {text!r}") from None


def byte_offset(text: str) -> int:
    """``--offset``'s type: a whole number of bytes, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of bytes, 0 or more, not {text!r}")
    return value


def add_video_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preview-dir", type=Path, help="save each preview image into this directory (default: "
                        "previews are not saved)")
    parser.add_argument("--quiet", action="store_true", help="no progress display (default: progress on stderr)")
    add_connection_flags(parser, "animate")


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key):
        return None
    return TlsConfig(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The clients' options from the flags (their types checked --timeout and --max-attempts)."""
    return {"auth_token": args.auth_token, "tls": tls_config(args), "timeout": args.timeout,
            "max_attempts": args.max_attempts, "health_check": args.health_check}


def default_target(service: str) -> str:
    variable, default = TARGETS[service]
    return os.environ.get(variable, default)


