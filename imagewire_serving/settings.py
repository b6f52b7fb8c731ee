"""Process settings: the flags every server shares, and flags with environment fallbacks built from declarations.

Every field declared with :func:`imagewire_serving.config.option` in a service's settings (and in the Config
dataclasses it nests, such as the engine limits) becomes a flag. A flag ``--some-flag`` of a service whose prefix
is ``IMAGEWIRE_CAPTIONER`` can also be set by the environment variable ``IMAGEWIRE_CAPTIONER_SOME_FLAG``; an
explicit flag wins. Values are checked by the dataclasses themselves, so a bad one raises ValueError naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import os
import re
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from imagewire_serving.config import Config, OptionSpec, option, spec_of
from imagewire_serving.model_cache import cache_root

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _log_level(text: str) -> str:
    return text.strip().upper()


def gpu_device_nodes() -> bool:
    """Whether the machine shows a GPU device node CUDA could use (NVIDIA's, ROCm's, WSL's): without one, a CUDA
    device cannot be there, which is known without loading torch."""
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() or (dev / "dxg").exists()


def looks_like_a_path(source: str) -> bool:
    """A model source that is a local directory rather than a hub id ("owner/name"): absolute, relative with ./ or
    ../, or ~, or existing."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).exists()


def env_name(prefix: str, flag: str) -> str:
    return f"{prefix}_{flag.lstrip('-').replace('-', '_').upper()}"


@dataclass(frozen=True)
class ServerSettings(Config):
    """What every imagewire server process needs, whatever it serves."""

    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(0, "port to listen on; 0 picks a free port", minimum=0, maximum=65535)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    dtype: str = option(
        "auto", "the models' dtype: auto = float16 on CUDA; on the CPU float32, or where the CPU computes bfloat16 "
        "or float16 natively the fastest of them, timed at start-up", choices=DTYPE_NAMES)
    compile: str = option(
        "auto", "torch.compile the models' heavy parts (vision encoder, denoiser, VAE decoder) before serving: on, "
        "off, or auto = each part the start-up measures faster compiled (for every batch, or for lone requests)",
        choices=("auto", "on", "off"))
    compile_cache: Path | None = option(
        None, "directory of the compile cache (on the CPU the compiled parts as AOTInductor packages, which hold a "
        "copy of their weights; inductor's compiled code) and of the dtype and compile decisions, reused by every "
        "start with the same model and settings (default: $IMAGEWIRE_CACHE/compile, else "
        "~/.cache/imagewire/compile)", parse=Path)
    compile_cache_max_gb: float = option(
        20.0, "after the warm-up, remove the compiled packages unused the longest until the cache's packages total "
        "at most this many GB (those in use, or used in the last hour, are kept); 0 = no limit", minimum=0)
    threads: int | None = option(
        None, "CPU threads for the model's operations (default: the CPUs this process may use)", minimum=1)
    models: tuple[str, ...] = option(
        (), "model directory or hub id; repeat to serve several (none = the embedded default)", flag="--model",
        repeatable=True)
    reflection: bool = option(True, "serve gRPC server reflection", boolean=True)
    grace_s: float = option(30.0, "seconds in-flight calls get to finish on SIGTERM", flag="--grace", minimum=0)
    drain_window_s: float = option(
        10.0, "after SIGTERM, seconds at most of answering new calls UNAVAILABLE (so callers that have not yet seen "
        "NOT_SERVING retry elsewhere) before the port closes; it closes once no call came for 0.5 s",
        flag="--drain-window", minimum=0)
    # Aged connections are how callers of a dns:/// target find replicas started after they connected: the
    # GOAWAY makes them re-resolve. The calls in flight on an aged connection are never cut unless a grace is set.
    max_connection_age_s: float = option(
        60.0, "seconds after which a client connection is asked to reconnect (GOAWAY); 0 = never",
        flag="--max-connection-age", minimum=0)
    max_connection_age_grace_s: float = option(
        0.0, "seconds the calls still in flight on an aged connection get before it is closed; 0 = as long as "
        "they take (a video stream is never cut)", flag="--max-connection-age-grace", minimum=0)
    otlp_endpoint: str | None = option(
        None, "export OpenTelemetry traces over OTLP/gRPC to this endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT "
        "or $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; unset: no tracing, at no cost)")
    metrics_port: int | None = option(None, "serve Prometheus metrics over HTTP on this port", minimum=0,
                                      maximum=65535)
    auth_token: str | None = option(None, "require 'authorization: Bearer TOKEN' on every call but health checks")
    tls_cert: Path | None = option(None, "PEM server certificate chain (enables TLS)", parse=Path)
    tls_key: Path | None = option(None, "PEM server private key", parse=Path)
    tls_client_ca: Path | None = option(
        None, "PEM CA bundle; require client certificates signed by it (mutual TLS)", parse=Path)
    log_format: str = option("text", "text or json", choices=("text", "json"))
    log_level: str = option("INFO", "DEBUG, INFO, WARNING or ERROR", choices=LOG_LEVELS, parse=_log_level)
    # Past this many RPCs at once grpc answers RESOURCE_EXHAUSTED immediately.
    max_concurrent_rpcs: int = option(1024, "calls accepted at once before RESOURCE_EXHAUSTED", minimum=1)

    def check(self) -> None:
        if all(part.isdigit() for part in self.host.split(".")):  # dotted numbers must make an IPv4 address
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                raise ValueError(f"--host {self.host} is not an IP address") from None
        for source in self.models:
            if looks_like_a_path(source) and not Path(source).expanduser().is_dir():
                raise ValueError(f"--model {source}: no such directory")
        if not _DEVICE.match(self.device):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.device.startswith("cuda") and not gpu_device_nodes():  # told before torch loads, and before listening
            raise ValueError(f"--device {self.device}: CUDA is not available on this machine")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file not found: {path}")
        cache = None if self.compile_cache is None else Path(self.compile_cache).expanduser()
        if cache is not None and cache.exists() and not cache.is_dir():
            raise ValueError(f"--compile-cache {self.compile_cache}: not a directory")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def compile_cache_dir(settings: ServerSettings) -> Path:
    """Where compiled code and the dtype and compile decisions are kept (see ServerSettings.compile_cache)."""
    if settings.compile_cache is not None:
        return Path(settings.compile_cache).expanduser()
    return cache_root() / "compile"


@dataclass(frozen=True)
class Flag:
    """One declared option found in a settings tree: where its value goes and how it is parsed."""

    path: tuple[str, ...]  # attribute names from the root settings class down to the field
    spec: OptionSpec
    default: Any
    parse: Any

    @property
    def dest(self) -> str:
        return "__".join(self.path)


def declared_flags(cls: type[Any], path: tuple[str, ...] = ()) -> Iterator[Flag]:
    """Every option of a Config dataclass and of the Config dataclasses nested in it (what the parser is built
    from, and what the start-up fuzz draws bad values for)."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if isinstance(kind, type) and issubclass(kind, Config):
            yield from declared_flags(kind, (*path, item.name))
            continue
        spec = spec_of(item)
        if spec is not None:
            scalar = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
            yield Flag((*path, item.name), spec, item.default, spec.parse or scalar)


def _add_flag(parser: argparse.ArgumentParser, flag: Flag, env_prefix: str, default: Any) -> None:
    name = flag.spec.flag_for(flag.path[-1])
    metavar = name.lstrip("-").replace("-", "_").upper()
    variable = env_name(env_prefix, name)
    convert = _parse_bool if flag.spec.boolean else flag.parse
    raw = os.environ.get(variable)
    if raw:
        try:
            default = tuple(convert(part) for part in raw.split(",") if part) if flag.spec.repeatable else convert(raw)
        except ValueError as error:
            parser.error(f"{variable}={raw!r}: {error}")
    help_text = f"{flag.spec.help} [env {variable}]{_shown(default, flag.spec.repeatable)}"
    if flag.spec.boolean:
        parser.add_argument(name, dest=flag.dest, action=argparse.BooleanOptionalAction, default=bool(default),
                            help=help_text)
    elif flag.spec.repeatable:
        # Appended flags replace the environment's list rather than extending it.
        parser.add_argument(name, dest=flag.dest, action="append", type=convert, default=None, help=help_text,
                            metavar=metavar)
        parser.set_defaults(**{flag.dest + "__env": tuple(default)})
    else:
        parser.add_argument(name, dest=flag.dest, type=convert, default=default, help=help_text, metavar=metavar)


def _shown(default: Any, repeatable: bool) -> str:
    if default in (None, (), ""):
        return ""
    return f" (default: {','.join(map(str, default)) if repeatable else default})"


def _build(cls: type[Any], args: argparse.Namespace, path: tuple[str, ...] = ()) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        kind, dest = hints[item.name], "__".join((*path, item.name))
        if isinstance(kind, type) and issubclass(kind, Config):
            values[item.name] = _build(kind, args, (*path, item.name))
        elif spec_of(item) is not None:
            value = getattr(args, dest)
            if spec_of(item).repeatable:  # type: ignore[union-attr] # checked on the line above
                value = tuple(value) if value else getattr(args, dest + "__env")
            values[item.name] = value if value != "" else item.default
    return cls(**values)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (the usage is 30 lines of every flag; --help shows it)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class ServiceSettings(Config):
    """Base of one service's settings: the shared server settings plus what the subclass declares."""

    prog: ClassVar[str]
    description: ClassVar[str]
    env_prefix: ClassVar[str]
    default_port: ClassVar[int]

    server: ServerSettings = field(default_factory=ServerSettings)

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """The command-line parser; defaults come from the environment, then the declarations."""
        parser = _Parser(prog=cls.prog, description=cls.description)
        for flag in declared_flags(cls):
            default = cls.default_port if flag.path == ("server", "port") else flag.default
            _add_flag(parser, flag, cls.env_prefix, default)
        return parser

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> Self:
        """Parse flags (with environment fallbacks) and build the checked settings; ValueError names a bad flag,
        or the variable a bad value came from, or a variable of the service's prefix that is no setting."""
        args = cls.parser().parse_args(argv)
        variables = {env_name(cls.env_prefix, flag.spec.flag_for(flag.path[-1])): flag.spec.flag_for(flag.path[-1])
                     for flag in declared_flags(cls)}
        unknown = sorted(name for name in os.environ if name.startswith(cls.env_prefix + "_") and name not in variables)
        if unknown:
            close = difflib.get_close_matches(unknown[0], variables, n=1)
            raise ValueError(f"{unknown[0]} is not a setting of {cls.prog}" + (f": did you mean {close[0]}?" if close
                                                                               else " (see --help)"))
        try:
            return typing.cast(Self, _build(cls, args))
        except ValueError as error:
            raise ValueError(_naming_variables(str(error), variables, sys.argv[1:] if argv is None else argv)) from None


def _naming_variables(message: str, variables: dict[str, str], argv: Sequence[str]) -> str:
    """``message`` with each flag it names that took its value from a variable named as that variable."""
    given = {token.split("=", 1)[0] for token in argv}
    for variable, flag in variables.items():
        if os.environ.get(variable) and flag not in given:
            message = re.sub(rf"{re.escape(flag)}\b(?!-)", f"{variable} (--{flag.lstrip('-')})", message)
    return message
