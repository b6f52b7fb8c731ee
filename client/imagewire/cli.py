"""The ``imagewire`` command: caption images and animate them through the imagewire servers.

    imagewire caption IMAGE... --target HOST:PORT [--prompt TEXT] [--model-id ID]
    imagewire animate IMAGE -o OUT.mp4 --target HOST:PORT [--num-frames N --seed S ... --job-id ID --preview-dir D]
    imagewire watch JOB_ID -o OUT.mp4 --target HOST:PORT [--offset N] [--preview-dir D]
    imagewire cancel JOB_ID --target HOST:PORT
    imagewire models --target HOST:PORT [--service caption|animate]
    imagewire demo [--caption-target T] [--animate-target T] [-o demo.mp4]

--target takes any gRPC target string (host:port, dns:///name:port, ipv4:a:p1,b:p2); calls spread over every
address it resolves to, skip replicas that are not SERVING, and are retried on another replica when one is
unavailable (--max-attempts, --no-retry). Defaults come from
IMAGEWIRE_CAPTION_TARGET / IMAGEWIRE_ANIMATE_TARGET, else the servers' default ports on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor

from imagewire._display import PreviewSaver, ProgressBar
from imagewire.animate.v1 import animate_pb2
from imagewire.caption.v1 import caption_pb2
from imagewire.client import (
    AnimateClient,
    AnimateEvent,
    AnimateResult,
    Caption,
    CaptionClient,
    ImagewireError,
    TlsConfig,
)
from imagewire.client._channel import DEFAULT_MAX_ATTEMPTS
from imagewire.client._messages import enum_members, optional_fields, python_type

DEFAULT_CAPTION_TARGET = "127.0.0.1:50051"
DEFAULT_ANIMATE_TARGET = "127.0.0.1:50052"


def sample_image() -> bytes:
    """The demo image shipped with the client: a drawn scene the embedded caption model knows."""
    return resources.files("imagewire.data").joinpath("sample.png").read_bytes()


def video_formats() -> dict[str, int]:
    """``--format``'s choices, read from the VideoFormat enum: each format by its lower-case name (``mp4_h264``)
    and, where no other format shares it, by its container alone (``mp4``)."""
    formats = {name.lower(): number for name, number in enum_members(animate_pb2.VideoFormat.DESCRIPTOR).items()
               if number}  # 0 is UNSPECIFIED: leaving --format out asks for it
    containers = collections.Counter(name.split("_")[0] for name in formats)
    aliases = {name.split("_")[0]: number for name, number in formats.items() if containers[name.split("_")[0]] == 1}
    return {**formats, **aliases}


def _add_optional_flags(parser: argparse.ArgumentParser, request: Descriptor) -> None:
    """One flag per optional request field (``num_frames`` -> ``--num-frames``), typed from the field."""
    for field in optional_fields(request):
        kind = python_type(field)
        # argparse's type=bool would read "false" as True: a boolean field gets --name / --no-name instead.
        typing: dict[str, Any] = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        parser.add_argument(f"--{field.name.replace('_', '-')}", **typing,
                            help=f"{request.name}.{field.name} (absent: the server's default)")


def _optional_values(args: argparse.Namespace, request: Descriptor) -> dict[str, Any]:
    return {field.name: getattr(args, field.name) for field in optional_fields(request)}


def _add_connection_flags(parser: argparse.ArgumentParser, *, target_env: str, default_target: str) -> None:
    parser.add_argument(
        "--target", default=os.environ.get(target_env, default_target),
        help=f"gRPC target (default ${target_env} or {default_target})",
    )
    _add_security_flags(parser)


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, help="deadline of each call in seconds")
    retries = parser.add_mutually_exclusive_group()
    retries.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                         help="attempts per call, retries on another replica included (1-5, default "
                              f"{DEFAULT_MAX_ATTEMPTS})")
    retries.add_argument("--no-retry", dest="max_attempts", action="store_const", const=1,
                         help="never retry a call (--max-attempts 1)")
    parser.add_argument("--no-health-check", dest="health_check", action="store_false",
                        help="do not health-check the target's replicas (a proxy such as Envoy does it)")
    parser.add_argument("--auth-token", default=os.environ.get("IMAGEWIRE_AUTH_TOKEN"),
                        help="bearer token (default $IMAGEWIRE_AUTH_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's trusted roots")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate to verify the server (implies --tls)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="client private key for mutual TLS")
    parser.add_argument("--tls-server-name", help="expected name in the server certificate")


def _add_video_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preview-dir", type=Path, help="save each preview image into this directory")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    _add_connection_flags(parser, target_env="IMAGEWIRE_ANIMATE_TARGET", default_target=DEFAULT_ANIMATE_TARGET)


def _on_event(args: argparse.Namespace) -> Callable[[AnimateEvent], None] | None:
    display = None if args.quiet else ProgressBar()
    return display if args.preview_dir is None else PreviewSaver(args.preview_dir, display)


def _tls(args: argparse.Namespace) -> TlsConfig | None:
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key):
        return None
    return TlsConfig(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    # --timeout 0 reaches the client, which refuses it, rather than silently meaning the default.
    return {"auth_token": args.auth_token, "tls": _tls(args), "timeout": args.timeout,
            "max_attempts": args.max_attempts, "health_check": args.health_check}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagewire", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    caption = commands.add_parser("caption", help="caption one or more images")
    caption.add_argument("images", nargs="+", type=Path, help="image files")
    caption.add_argument("--prompt", default="", help="caption prefix to continue")
    caption.add_argument("--model-id", default="", help="model to use (default: the server's)")
    _add_optional_flags(caption, caption_pb2.CaptionRequest.DESCRIPTOR)
    caption.add_argument("--json", action="store_true", help="print one JSON object per image")
    _add_connection_flags(caption, target_env="IMAGEWIRE_CAPTION_TARGET", default_target=DEFAULT_CAPTION_TARGET)

    animate = commands.add_parser("animate", help="generate a video from an image")
    animate.add_argument("image", type=Path, help="conditioning image file")
    animate.add_argument("-o", "--output", type=Path, required=True, help="video file to write")
    animate.add_argument("--model-id", default="", help="model to use (default: the server's)")
    _add_optional_flags(animate, animate_pb2.AnimateRequest.DESCRIPTOR)
    animate.add_argument("--safety-check", action="store_true", help="run the server's safety checker")
    animate.add_argument("--format", choices=sorted(video_formats()), help="container and codec (default: mp4)")
    animate.add_argument("--job-id", help="the job's id (an idempotency key; default: a new one)")
    _add_video_flags(animate)

    watch = commands.add_parser("watch", help="write a job's video to a file, from where it is")
    watch.add_argument("job_id", help="the job's id, as animate printed it")
    watch.add_argument("-o", "--output", type=Path, required=True, help="video file to write")
    watch.add_argument("--offset", type=int, default=0,
                       help="bytes of the video the output file already has: continue it from there")
    _add_video_flags(watch)

    cancel = commands.add_parser("cancel", help="stop a job at its next step")
    cancel.add_argument("job_id", help="the job's id")
    _add_connection_flags(cancel, target_env="IMAGEWIRE_ANIMATE_TARGET", default_target=DEFAULT_ANIMATE_TARGET)

    models = commands.add_parser("models", help="list a server's models, limits and defaults")
    models.add_argument("--service", choices=("caption", "animate"), default="caption")
    models.add_argument("--target", help="gRPC target (default: the service's default target)")
    _add_security_flags(models)

    demo = commands.add_parser("demo", help="caption and animate the bundled sample image")
    demo.add_argument("--caption-target", default=os.environ.get("IMAGEWIRE_CAPTION_TARGET", DEFAULT_CAPTION_TARGET))
    demo.add_argument("--animate-target", default=os.environ.get("IMAGEWIRE_ANIMATE_TARGET", DEFAULT_ANIMATE_TARGET))
    demo.add_argument("-o", "--output", type=Path, default=Path("demo.mp4"))
    # Unset sizes take the served model's defaults (small for the embedded model, SVD-XT's for the real one).
    _add_optional_flags(demo, animate_pb2.AnimateRequest.DESCRIPTOR)
    demo.set_defaults(seed=7)
    _add_security_flags(demo)
    return parser


def _caption_json(path: Path, result: Caption) -> str:
    return json.dumps({"image": str(path), "text": result.text, "model_id": result.model_id,
                       "input_pixels": result.usage.input_pixels, "price_usd": result.usage.price_usd})


def _caption(args: argparse.Namespace) -> int:
    fields = _optional_values(args, caption_pb2.CaptionRequest.DESCRIPTOR)
    failures = 0
    with (
        CaptionClient(args.target, **_client_kwargs(args)) as client,
        # Send every image at once: the server batches concurrent requests.
        concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(args.images))) as pool,
    ):
        futures = [pool.submit(client.caption, path, prompt=args.prompt, model_id=args.model_id, **fields)
                   for path in args.images]
        for path, future in zip(args.images, futures):
            try:
                result = future.result()
            except (ImagewireError, OSError) as error:
                failures += 1
                print(f"{path}: error: {error}", file=sys.stderr)
                continue
            if args.json:
                print(_caption_json(path, result))
            else:
                print(result.text if len(args.images) == 1 else f"{path}: {result.text}")
    return 1 if failures else 0


def _animate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with AnimateClient(args.target, **_client_kwargs(args)) as client:
        result = client.animate_to_file(
            args.image, args.output, on_event=_on_event(args), model_id=args.model_id, job_id=args.job_id,
            safety_check=args.safety_check, format=video_formats()[args.format] if args.format else None,
            **_optional_values(args, animate_pb2.AnimateRequest.DESCRIPTOR),
        )
    _print_result(args.output, result, time.perf_counter() - started)
    return 0


def _watch(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with AnimateClient(args.target, **_client_kwargs(args)) as client:
        result = client.watch_to_file(args.job_id, args.output, offset=args.offset, on_event=_on_event(args))
    _print_result(args.output, result, time.perf_counter() - started)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with AnimateClient(args.target, **_client_kwargs(args)) as client:
        status = client.cancel(args.job_id)
    print(f"job {status.job_id}: {status.state.name.lower()}")
    return 0


def _print_result(output: Path, result: AnimateResult, seconds: float) -> None:
    safety = ("nsfw" if result.nsfw else "safe") if result.safety_checked else "not checked"
    print(f"wrote {output} ({result.total_bytes} bytes, seed {result.seed}, safety {safety}, "
          f"${result.usage.price_usd:.6f}) in {seconds:.1f}s")


def _models(args: argparse.Namespace) -> int:
    kwargs = _client_kwargs(args)
    if args.service == "caption":
        with CaptionClient(args.target or DEFAULT_CAPTION_TARGET, **kwargs) as client:
            models: Any = client.list_models()
    else:
        with AnimateClient(args.target or DEFAULT_ANIMATE_TARGET, **kwargs) as client:
            models = client.list_models()
    print(json.dumps(dataclasses.asdict(models), indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    image = sample_image()
    kwargs = _client_kwargs(args)
    with CaptionClient(args.caption_target, **kwargs) as captions:
        caption = captions.caption(image)
    print(f"caption: {caption.text}  (model {caption.model_id}, ${caption.usage.price_usd:.8f})")
    started = time.perf_counter()
    with AnimateClient(args.animate_target, **kwargs) as animator:
        result = animator.animate_to_file(image, args.output, on_event=ProgressBar(),
                                          **_optional_values(args, animate_pb2.AnimateRequest.DESCRIPTOR))
    print(f"video: {args.output} ({result.total_bytes} bytes, seed {result.seed}) in "
          f"{time.perf_counter() - started:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``imagewire`` command; returns its exit status."""
    args = _parser().parse_args(argv)
    handlers = {"caption": _caption, "animate": _animate, "watch": _watch, "cancel": _cancel, "models": _models,
                "demo": _demo}
    try:
        return handlers[args.command](args)
    except ImagewireError as error:
        print(f"imagewire {args.command}: {error}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"imagewire {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
