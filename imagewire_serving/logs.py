"""Logging set-up: plain text for people, one JSON object per line for log pipelines."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record and any structured extras (such as the per-RPC fields) as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines, with the per-RPC fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict):
            skip = {"method", "code", "duration_ms"}
            line += " " + " ".join(f"{k}={v}" for k, v in rpc.items() if k not in skip)
        return line


def quiet_model_loaders(libraries: tuple[str, ...]) -> None:
    """Server logs are line-oriented: the model libraries' tqdm progress bars would only garble them. And
    transformers' notice that an image processor falls back to its PIL backend without torchvision is dropped:
    that backend is the one these servers use (torchvision is no dependency), so the notice said nothing at every
    start."""
    import importlib

    for library in libraries:
        importlib.import_module(f"{library}.utils.logging").disable_progress_bar()
    logging.getLogger("transformers.utils.import_utils").addFilter(_not_the_torchvision_notice)


def _not_the_torchvision_notice(record: logging.LogRecord) -> bool:
    return "requires torchvision" not in record.getMessage()


def configure(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
