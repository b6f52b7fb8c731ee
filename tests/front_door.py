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

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping

from imagewire_serving.frontdoor.config import FrontDoor
from imagewire_serving.frontdoor.process import Envoy

CAPTION = "imagewire.caption.v1.CaptionService"
ANIMATE = "imagewire.animate.v1.AnimateService"


def grpc_web_front_door(upstreams: Mapping[str, str], *, allow_origin: str
                        ) -> contextlib.AbstractAsyncContextManager[str]:
    """The deployed Envoy in front of ``upstreams`` (a service's full name -> its server's ``host:port``),
    serving gRPC-Web to pages from ``allow_origin``: a context manager yielding its base URL
    (``http://127.0.0.1:PORT``) that stops Envoy on exit. Asynchronous, so that servers on this event loop answer
    Envoy's health checks while it starts."""
    return _started(upstreams, allow_origin)


@contextlib.asynccontextmanager
async def _started(upstreams: Mapping[str, str], allow_origin: str) -> AsyncIterator[str]:
    front = FrontDoor(captioners=[upstreams[CAPTION]] if CAPTION in upstreams else [],
                      animators=[upstreams[ANIMATE]] if ANIMATE in upstreams else [],
                      allow_origin=re.escape(allow_origin), health_interval_s=0.5)
    envoy = await asyncio.to_thread(Envoy.start, front)
    try:
        for cluster, service in (("captioner", CAPTION), ("animator", ANIMATE)):
            if service in upstreams:
                await asyncio.to_thread(envoy.wait_healthy, cluster, 1)
        yield f"http://{envoy.target}"
    finally:
        await asyncio.to_thread(envoy.terminate)
