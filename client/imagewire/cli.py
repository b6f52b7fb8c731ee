"""The ``imagewire`` command: caption images and animate them through the imagewire servers.

    imagewire caption IMAGE... --target HOST:PORT [--prompt TEXT] [--model-id ID]
    imagewire animate IMAGE -o OUT.mp4 --target HOST:PORT [--num-frames N --seed S ... --job-id ID --preview-dir D]
    imagewire watch JOB_ID -o OUT.mp4 --target HOST:PORT [--offset N] [--preview-dir D]
    imagewire cancel JOB_ID --target HOST:PORT
    imagewire models --target HOST:PORT [--service caption|animate]   (absent: found by server reflection)
    imagewire demo [--caption-target T] [--animate-target T] [-o demo.mp4]

--target takes any gRPC target string (host:port, dns:///name:port, ipv4:a:p1,b:p2); calls spread over every
address it resolves to, skip replicas that are not SERVING, and are retried on another replica when one is
unavailable (--max-attempts, --no-retry). Defaults come from
IMAGEWIRE_CAPTION_TARGET / IMAGEWIRE_ANIMATE_TARGET, else the servers' default ports on 127.0.0.1.

The video format follows -o's extension (.mp4, .webm) unless --format says. Ctrl-C cancels the job an animate
started (watch only stops watching) and says what became of the output file. Exit status: 0 done, 1 a call
failed, 2 a bad command line, 130 interrupted.
"""

from __future__ import annotations

import argparse
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

import grpc

from imagewire._cli_args import (
    DEFAULT_ANIMATE_TARGET,
    DEFAULT_CAPTION_TARGET,
    TARGETS,
    add_connection_flags,
    add_optional_flags,
    add_security_flags,
    add_video_flags,
    byte_offset,
    client_kwargs,
    default_target,
    field_help,
    optional_values,
    target,
    tls_config,
)
from imagewire._ctrl_c import CTRL_C
from imagewire._display import connecting, showing
from imagewire._formats import UsageError, matching_container, output_format, video_formats
from imagewire._outputs import STDOUT, checked_output, checked_preview_dir, file_after, job_after
from imagewire._services import SERVICES, find_service, other_service
from imagewire.animate.v1 import animate_pb2
from imagewire.caption.v1 import caption_pb2
from imagewire.client import (
    AnimateClient,
    AnimateResult,
    Caption,
    CaptionClient,
    ImagewireError,
)
from imagewire.client import Interrupted as DownloadInterrupted
from imagewire.client.animate import DEFAULT_ANIMATE_TIMEOUT_S, new_job_id


class Interrupted(Exception):
    """Ctrl-C, with what became of the command's work."""


def sample_image() -> bytes:
    """The demo image shipped with the client: a drawn scene the embedded caption model knows."""
    return resources.files("imagewire.data").joinpath("sample.png").read_bytes()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagewire", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    caption = commands.add_parser("caption", help="caption one or more images")
    caption.add_argument("images", nargs="+", type=Path, help="image files")
    caption.add_argument("--prompt", default="", help=field_help(caption_pb2.CaptionRequest.DESCRIPTOR
                                                                 .fields_by_name["prompt"], "none"))
    caption.add_argument("--model-id", default="", help="model to use (default: the server's default model)")
    add_optional_flags(caption, caption_pb2.CaptionRequest.DESCRIPTOR)
    caption.add_argument("--json", action="store_true", help="print one JSON object per image (default: the text)")
    add_connection_flags(caption, "caption")

    animate = commands.add_parser("animate", help="generate a video from an image")
    animate.add_argument("image", type=Path, help="conditioning image file")
    animate.add_argument("-o", "--output", type=Path, required=True,
                         help="video file to write; its extension (.mp4, .webm) chooses the format")
    animate.add_argument("--model-id", default="", help="model to use (default: the server's default model)")
    add_optional_flags(animate, animate_pb2.AnimateRequest.DESCRIPTOR)
    animate.add_argument("--safety-check", action="store_true",
                         help="run the server's safety checker on the image (default: off)")
    animate.add_argument("--format", choices=sorted(video_formats()),
                         help="container and codec (default: the one -o's extension names)")
    animate.add_argument("--wait", action="store_true",
                         help="when the server's queue is full, try again with growing pauses within --timeout "
                              "(default: fail with RESOURCE_EXHAUSTED)")
    animate.add_argument("--job-id", help="the job's id, an idempotency key (default: a new one, printed first)")
    add_video_flags(animate)

    watch = commands.add_parser("watch", help="write a job's video to a file, from where it is")
    watch.add_argument("job_id", help="the job's id, as animate printed it")
    watch.add_argument("-o", "--output", type=Path, required=True, help="video file to write")
    watch.add_argument("--offset", type=byte_offset, default=0,
                       help="bytes of the video the output file already has: continue it from there (default 0)")
    add_video_flags(watch)

    cancel = commands.add_parser("cancel", help="stop a job at its next step")
    cancel.add_argument("job_id", help="the job's id")
    add_connection_flags(cancel, "animate")

    models = commands.add_parser("models", help="list a server's models, limits and defaults")
    models.add_argument("--service", choices=sorted(TARGETS),
                        help="the service to ask (default: the one the target serves, found by server reflection)")
    models.add_argument("--target", type=target, help="gRPC target (default: the --service's default target: "
                        f"${TARGETS['caption'][0]} or {DEFAULT_CAPTION_TARGET} for caption and without --service, "
                        f"${TARGETS['animate'][0]} or {DEFAULT_ANIMATE_TARGET} for animate)")
    add_security_flags(models, None)

    demo = commands.add_parser("demo", help="caption and animate the bundled sample image")
    demo.add_argument("--caption-target", type=target, default=default_target("caption"),
                      help=f"the captioner (default $IMAGEWIRE_CAPTION_TARGET or {DEFAULT_CAPTION_TARGET})")
    demo.add_argument("--animate-target", type=target, default=default_target("animate"),
                      help=f"the animator (default $IMAGEWIRE_ANIMATE_TARGET or {DEFAULT_ANIMATE_TARGET})")
    demo.add_argument("-o", "--output", type=Path, default=Path("demo.mp4"),
                      help="video file to write; its extension (.mp4, .webm) chooses the format (default demo.mp4)")
    # Unset sizes take the served model's defaults (small for the embedded model, SVD-XT's for the real one).
    add_optional_flags(demo, animate_pb2.AnimateRequest.DESCRIPTOR, seed=7)
    add_security_flags(demo, None)
    return parser


def _caption_json(path: Path, result: Caption) -> str:
    return json.dumps({"image": str(path), "text": result.text, "model_id": result.model_id,
                       "input_pixels": result.usage.input_pixels, "price_usd": result.usage.price_usd})


def _caption(args: argparse.Namespace) -> int:
    fields = optional_values(args, caption_pb2.CaptionRequest.DESCRIPTOR)
    failures: list[Exception] = []
    with (
        CaptionClient(args.target, **client_kwargs(args)) as client,
        CTRL_C.stopping(client.close),
        # Send every image at once: the server batches concurrent requests.
        concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(args.images))) as pool,
    ):
        futures = [pool.submit(client.caption, path, prompt=args.prompt, model_id=args.model_id, **fields)
                   for path in args.images]
        for path, future in zip(args.images, futures):
            try:
                result = future.result()
            except (ImagewireError, OSError) as error:
                if CTRL_C.pressed:  # the call ended because Ctrl-C closed the channel
                    raise KeyboardInterrupt from None
                failures.append(error)
                print(f"{path}: error: {error}", file=sys.stderr)
                continue
            if args.json:
                print(_caption_json(path, result))
            else:
                print(result.text if len(args.images) == 1 else f"{path}: {result.text}")
    calls = [error for error in failures if isinstance(error, ImagewireError)]
    if calls:
        _hint_service(args, calls[0])
    return 1 if failures else 0


def _animate(args: argparse.Namespace) -> int:
    video_format = output_format(checked_output(args.output), args.format)
    preview_dir = checked_preview_dir(args.preview_dir)
    job_id = args.job_id or new_job_id()  # chosen here, so that an interruption can name it
    started = time.perf_counter()
    try:
        with showing(args.quiet, preview_dir) as on_event, \
                AnimateClient(args.target, **client_kwargs(args)) as client, CTRL_C.stopping(client.interrupt):
            connecting(args.target, quiet=args.quiet)
            output = sys.stdout.buffer if args.output == STDOUT else args.output
            result = _waiting_for_room(args, lambda timeout: client.animate_to_file(
                args.image, output, on_event=on_event, model_id=args.model_id, job_id=job_id,
                safety_check=args.safety_check, format=video_format, timeout=timeout,
                **optional_values(args, animate_pb2.AnimateRequest.DESCRIPTOR),
            ))
    except DownloadInterrupted as stop:
        raise Interrupted(f"{job_after(stop, args.target)}; {file_after(stop, args.output)}") from None
    _print_result(args.output, result, time.perf_counter() - started)
    return 0


def _waiting_for_room(args: argparse.Namespace, call: Callable[[float | None], AnimateResult]) -> AnimateResult:
    """``call(timeout)``; with --wait, sent again after a growing pause while the server refuses it because its
    queue is full (RESOURCE_EXHAUSTED before any answer: safe to retry), all within --timeout."""
    deadline = time.monotonic() + (args.timeout or DEFAULT_ANIMATE_TIMEOUT_S)
    pause = 1.0
    while True:
        try:
            return call(max(deadline - time.monotonic(), 0.001) if args.wait else args.timeout)
        except ImagewireError as error:
            full = error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and not error.responses_received
            if not (args.wait and full) or deadline - time.monotonic() <= pause:
                raise
        print(f"the server's queue is full; trying again in {pause:g} s", file=sys.stderr, flush=True)
        CTRL_C.wait(pause)  # Ctrl-C ends the pause; the next call then says what became of the job
        pause = min(pause * 2, 16.0)


def _watch(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    preview_dir = checked_preview_dir(args.preview_dir)
    if args.output == STDOUT:
        raise UsageError("watch writes a file it can continue: -o - (standard output) cannot be")
    checked_output(args.output)
    try:
        with showing(args.quiet, preview_dir) as on_event, \
                AnimateClient(args.target, **client_kwargs(args)) as client, CTRL_C.stopping(client.interrupt):
            connecting(args.target, quiet=args.quiet)
            result = client.watch_to_file(args.job_id, args.output, offset=args.offset,
                                          on_event=matching_container(args.output, on_event))
    except DownloadInterrupted as stop:
        again = f"imagewire watch {args.job_id} -o {args.output} --target {args.target}" + (
            f" --offset {stop.written}" if stop.written and stop.kept else "")
        raise Interrupted(f"stopped watching job {args.job_id}, which goes on; {file_after(stop, args.output)}; "
                          f"`{again}` picks it up again") from None
    _print_result(args.output, result, time.perf_counter() - started)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with AnimateClient(args.target, **client_kwargs(args)) as client, CTRL_C.stopping(client.close):
        status = client.cancel(args.job_id)
    print(f"job {status.job_id}: {status.state.name.lower()}")
    return 0


def _print_result(output: Path, result: AnimateResult, seconds: float) -> None:
    safety = ("nsfw" if result.nsfw else "safe") if result.safety_checked else "not checked"
    # Beside a video on standard output, the line goes to standard error.
    print(f"wrote {'standard output' if output == STDOUT else output} ({result.total_bytes} bytes, seed "
          f"{result.seed}, safety {safety}, ${result.usage.price_usd:.6f}) in {seconds:.1f}s",
          file=sys.stderr if output == STDOUT else sys.stdout)


def _models(args: argparse.Namespace) -> int:
    kwargs = client_kwargs(args)  # the flags are checked before reflection is asked
    if args.service is None:
        args.target = args.target or default_target("caption")
        args.service = find_service(args.target, tls=kwargs["tls"], auth_token=args.auth_token)
    args.target = args.target or default_target(args.service)
    client_type: Any = CaptionClient if args.service == "caption" else AnimateClient
    with client_type(args.target, **kwargs) as client, CTRL_C.stopping(client.close):
        models = client.list_models()
    print(json.dumps(dataclasses.asdict(models), indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.output == STDOUT:
        raise UsageError("demo prints the caption on standard output: -o must name a file")
    video_format = output_format(checked_output(args.output), None)
    image = sample_image()
    kwargs = client_kwargs(args)
    with CaptionClient(args.caption_target, **kwargs) as captions, CTRL_C.stopping(captions.close):
        caption = captions.caption(image)
    print(f"caption: {caption.text}  (model {caption.model_id}, ${caption.usage.price_usd:.8f})")
    started = time.perf_counter()
    job_id = new_job_id()
    try:
        with showing(False, None) as on_event, AnimateClient(args.animate_target, **kwargs) as animator, \
                CTRL_C.stopping(animator.interrupt):
            result = animator.animate_to_file(image, args.output, on_event=on_event, job_id=job_id,
                                              format=video_format,
                                              **optional_values(args, animate_pb2.AnimateRequest.DESCRIPTOR))
    except DownloadInterrupted as stop:
        raise Interrupted(f"{job_after(stop, args.animate_target)}; {file_after(stop, args.output)}") from None
    print(f"video: {args.output} ({result.total_bytes} bytes, seed {result.seed}) in "
          f"{time.perf_counter() - started:.1f}s")
    return 0


# The service each command calls (models: the one --service names or reflection found).
_SERVICE_OF = {"caption": "caption", "animate": "animate", "watch": "animate", "cancel": "animate"}


def _report(args: argparse.Namespace, error: ImagewireError) -> None:
    """Print a failed call: the error, the field violations its message does not already hold, and a hint when
    the call reached a server that does not serve the command's service."""
    print(f"imagewire {args.command}: {error}", file=sys.stderr)
    for violation in error.field_violations:
        if violation.description not in error.message:  # the server's message usually joins them already
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
    _hint_service(args, error)


def _hint_service(args: argparse.Namespace, error: ImagewireError) -> None:
    """After a call that failed as if the target did not serve the command's service: what it serves instead."""
    service = _SERVICE_OF.get(args.command, getattr(args, "service", None))
    if service and error.code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
        other = other_service(args.target, service, tls=tls_config(args), auth_token=args.auth_token)
        if other is not None:
            advice = f"use --service {other}" if args.command == "models" else "is --target the right server?"
            print(f"  hint: {args.target} serves {SERVICES[other]}, not {SERVICES[service]}: {advice}",
                  file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``imagewire`` command; returns its exit status."""
    args = _parser().parse_args(argv)
    handlers = {"caption": _caption, "animate": _animate, "watch": _watch, "cancel": _cancel, "models": _models,
                "demo": _demo}
    try:
        with CTRL_C.installed():
            return handlers[args.command](args)
    except ImagewireError as error:
        if CTRL_C.pressed:  # the call ended because Ctrl-C closed its channel
            print(f"imagewire {args.command}: interrupted", file=sys.stderr)
            return 130
        _report(args, error)
        return 1
    except UsageError as error:
        print(f"imagewire {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read the output stopped (`imagewire models | head`): end quietly, as a process killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush has nowhere to fail
        return 141  # 128 + SIGPIPE, what a shell reports for such a process
    except (OSError, ValueError) as error:
        print(f"imagewire {args.command}: {error}", file=sys.stderr)
        return 1
    except Interrupted as interrupted:
        print(f"imagewire {args.command}: interrupted: {interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"imagewire {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
