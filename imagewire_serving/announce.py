"""The two lines a server prints on stdout as it starts: where it listens, and that its models are ready.

Both sides of that contract live here, so they cannot drift: the servers print these lines
(:mod:`imagewire_serving.server`, ``bench.http_baseline``) and supervisors parse them
(:mod:`imagewire_serving.launcher`, which the tests, the benchmarks and the demo use) to learn the port a
``--port 0`` server bound and when it can take calls.
"""

from __future__ import annotations


def _listening_prefix(name: str) -> str:
    return f"{name} listening on "


def _ready_prefix(name: str) -> str:
    return f"{name} ready in "


def listening_line(name: str, address: str) -> str:
    """``NAME listening on HOST:PORT``: printed once the port is bound, before the models load."""
    return _listening_prefix(name) + address


def ready_line(name: str, seconds: float) -> str:
    """``NAME ready in 1.2s``: printed once the models are loaded and warmed."""
    return f"{_ready_prefix(name)}{seconds:.1f}s"


def listening_address(name: str, line: str) -> str | None:
    """The ``HOST:PORT`` a listening line announces, or None for any other line."""
    prefix = _listening_prefix(name)
    return line[len(prefix):].strip() if line.startswith(prefix) else None


def is_ready_line(name: str, line: str) -> bool:
    """Whether ``line`` is the server's ready line."""
    return line.startswith(_ready_prefix(name))
