"""The baseline to beat: a one-request-at-a-time HTTP multipart caption server.

Built the way the reference system's runner is: FastAPI + uvicorn, ``POST /image-to-text`` with the image as the
multipart form file field ``image`` (and optional form fields ``prompt`` and ``max_new_tokens``), answering
``{"text": ...}``. It runs the same :class:`~captioner.backend.CaptionBackend` as the gRPC captioner (same loader,
device, dtype and generation options) but serves one request at a time, with no batching::

    python -m bench.http_baseline --model DIR [--port 0] [--device cpu]

It prints the same announcement lines as the gRPC servers (:mod:`imagewire_serving.announce`) on stdout:
``http-baseline listening on HOST:PORT``, then ``http-baseline ready in ...`` once the model is loaded and warmed,
so a benchmark can start it with ``--port 0`` through :mod:`imagewire_serving.launcher` and learn the port.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Response, UploadFile
from PIL import Image

from captioner.backend import CaptionBackend, GenerationOptions
from captioner.families import load_captioner
from imagewire_serving.announce import listening_line, ready_line
from imagewire_serving.device import DTYPES, resolve_device
from imagewire_serving.errors import InvalidArgument
from imagewire_serving.images import decode_image

_LOGGER = logging.getLogger(__name__)

NAME = "http-baseline"
# The model time of the request, so a benchmark can tell the transport's overhead from the model's time.
COMPUTE_HEADER = "x-compute-ms"


def create_app(backend: CaptionBackend, *, default_max_new_tokens: int, num_beams: int) -> FastAPI:
    """The FastAPI app: one route, one request on the model at a time."""
    app = FastAPI(title="caption baseline")
    # A sync route runs in Starlette's thread pool, which would otherwise run several generate calls at once;
    # the reference runner serves one request at a time, so the whole request holds this lock.
    one_at_a_time = threading.Lock()

    @app.post("/image-to-text")
    def image_to_text(
        response: Response,
        image: Annotated[UploadFile, File()],
        prompt: Annotated[str, Form()] = "",
        max_new_tokens: Annotated[int | None, Form()] = None,
    ) -> dict[str, str]:
        options = GenerationOptions(
            max_new_tokens=default_max_new_tokens if max_new_tokens is None else max_new_tokens, num_beams=num_beams
        )
        data = image.file.read()
        with one_at_a_time:
            try:
                picture = decode_image(data)
            except InvalidArgument as error:
                raise HTTPException(status_code=400, detail=error.message) from None
            started = time.perf_counter()
            text = backend.generate([picture], [prompt], options)[0]
            response.headers[COMPUTE_HEADER] = f"{(time.perf_counter() - started) * 1000:.3f}"
        return {"text": text}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (loaded with from_pretrained)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="the reference runs float32")
    parser.add_argument("--default-max-new-tokens", type=int, default=20)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    device = resolve_device(args.device)
    backend = load_captioner(args.model, device, DTYPES[args.dtype])
    # The same warm-up as the gRPC captioner, so neither server's first request pays for lazy initialisation.
    backend.generate([Image.new("RGB", (64, 64), (127, 127, 127))], [""], GenerationOptions(4, 1))
    app = create_app(backend, default_max_new_tokens=args.default_max_new_tokens, num_beams=args.num_beams)

    # Bind here rather than in uvicorn so that port 0 can be announced before serving; connections made before
    # uvicorn accepts wait in the listen backlog.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    print(listening_line(NAME, f"{host}:{port}"), flush=True)
    print(ready_line(NAME, time.perf_counter() - started), flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
