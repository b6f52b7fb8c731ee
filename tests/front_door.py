"""The gRPC-Web front door the browser test reaches the servers through: Envoy, as deployed (deploy/envoy/).

Browsers cannot speak gRPC (fetch cannot read HTTP/2 trailers), so the page speaks gRPC-Web and the front door
translates. What the page needs from it, all exercised by tests/test_web_page.py through a real browser:

- both services on one base URL, routed by path prefix (``/imagewire.caption.v1.CaptionService/``,
  ``/imagewire.animate.v1.AnimateService/``) to the servers over HTTP/2 without TLS (h2c);
- ``envoy.filters.http.grpc_web`` before the router: binary gRPC-Web (``application/grpc-web+proto``, what
  Connect's gRPC-Web transport sends), the trailers turned into the body's last frame;
- ``envoy.filters.http.cors`` with a policy for the page's origin: methods POST (and the OPTIONS preflight),
  request headers ``content-type, x-grpc-web, x-user-agent, grpc-timeout, authorization`` (without
  ``grpc-timeout`` the preflight fails and every call with a deadline is refused), exposed response headers
  ``grpc-status, grpc-message, grpc-status-details-bin`` (a status sent in headers, as in a trailers-only error,
  is readable by the page only when exposed; Envoy 1.40's filter also repeats it in the body);
- no cut or buffered stream: route ``timeout: 0s`` (the caller's ``grpc-timeout`` is the deadline) and a stream
  idle timeout longer than the gap between progress events, so the video's bytes reach the page as they are made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENVOY_CONFIGS = ROOT / "deploy" / "envoy"
GRPC_WEB_FILTER = "envoy.filters.http.grpc_web"


def serves_grpc_web() -> bool:
    """Whether the deployed Envoy config (deploy/envoy/) has the gRPC-Web filter."""
    return ENVOY_CONFIGS.is_dir() and any(
        GRPC_WEB_FILTER in path.read_text(errors="replace") for path in ENVOY_CONFIGS.rglob("*") if path.is_file())


def require() -> None:
    """Skip while the deployed front door does not serve gRPC-Web: the Envoy front door (issue 13) is being built
    in parallel, and gRPC-Web on it is the second part of issue 15, which also starts it here."""
    if not serves_grpc_web():
        pytest.skip(f"the Envoy front door with gRPC-Web ({GRPC_WEB_FILTER} in deploy/envoy/) has not landed yet")


def grpc_web_front_door(upstreams: Mapping[str, str], *, allow_origin: str) -> contextlib.AbstractContextManager[str]:
    """The deployed Envoy in front of ``upstreams`` (a service's full name -> its server's ``host:port``),
    serving gRPC-Web to pages from ``allow_origin``: a context manager yielding its base URL
    (``http://127.0.0.1:PORT``) that stops Envoy on exit."""
    require()
    raise NotImplementedError("deploy/envoy serves gRPC-Web now: start it here with these upstreams and origin")
