"""What the service fuzz (tests/test_fuzz.py) draws requests from, and how it runs and tallies them.

Request fields are drawn from what ListModels says of each model (``FieldInfo``: default, minimum, maximum,
multiple_of, remainder), so the fuzz follows the contract as the server states it rather than a copied table:
boundary values, values just outside them, off-grid values, unset fields, and fields the model does not take.
Images are drawn from every shape (1 x N, N x 1, extreme aspect ratios), mode (palette, alpha, 16-bit, CMYK...)
and format the decoder takes, whole, truncated or mutated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

# Examples per fuzz test: a CI-sized default, more with IMAGEWIRE_FUZZ_EXAMPLES (a factor over the default).
SCALE = float(os.environ.get("IMAGEWIRE_FUZZ_EXAMPLES", "1"))


def budget(examples: int) -> Any:
    """Hypothesis settings for ``examples`` cases at the CI budget, scaled by IMAGEWIRE_FUZZ_EXAMPLES."""
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# pytest-timeout's limit for one fuzz test, scaled with its budget.
scaled_timeout = pytest.mark.timeout(300 * max(1.0, SCALE))

# Tallies of every fuzz case, by test and status, printed in pytest's terminal summary (tests/conftest.py).
TALLIES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def tally(case: str, code: grpc.StatusCode) -> None:
    TALLIES[case][code.name] += 1


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, list[str]]:
    """A failed call's code and the fields its BadRequest details name; asserts the failure is a documented one."""
    code, message = error.code(), error.details() or ""
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (code, message)
    assert message.strip(), f"{code.name} without a message"
    fields: list[str] = []
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [violation.field for violation in bad.field_violations]
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert fields, f"INVALID_ARGUMENT naming no field: {message}"
    return code, fields


# Images -------------------------------------------------------------------------------------------------------------

# The modes each format can write, as PIL saves them.
FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"],
}
SIDES = st.one_of(st.sampled_from([1, 2, 3, 7, 8, 63, 64, 65]), st.integers(1, 96))


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, int]:
    """Small sides, 1 x N and N x 1 lines, and extreme aspect ratios (a few thousand pixels at most)."""
    kind = draw(st.sampled_from(["small", "line", "extreme"]))
    if kind == "small":
        return draw(SIDES), draw(SIDES)
    long = draw(st.integers(2, 3000))
    short = 1 if kind == "line" else draw(st.integers(1, 3))
    return (long, short) if draw(st.booleans()) else (short, long)


@st.composite
def pictures(draw: st.DrawFn) -> bytes:
    """A whole encoded image of any shape, mode and format, with content to it (a gradient and noise)."""
    fmt = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    width, height = draw(shapes())
    seed = draw(st.integers(0, 255))
    image = Image.linear_gradient("L").resize((width, height)).point(lambda v: (v + seed) % 256)
    image = Image.merge("RGB", (image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image.rotate(90)))
    if mode == "P":
        image = image.quantize(draw(st.integers(2, 256)))
        if draw(st.booleans()):
            image.info["transparency"] = 0
    elif mode in ("I;16", "I", "F"):
        image = image.convert("L").convert("I").point(lambda v: v * 257).convert(mode)
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A whole image cut short, or with bytes flipped, inserted or removed."""
    data = bytearray(draw(pictures()))
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[position : position + draw(st.integers(1, 16))]
    return bytes(data)


images = st.one_of(pictures(), pictures(), mutated(), st.binary(max_size=64))


# Request fields, from ListModels ----------------------------------------------------------------------------------

# Text of every kind: empty, long, unicode (combining marks, zero-width, emoji, private use), control characters.
TEXT = st.one_of(st.just(""), st.text(max_size=12), st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
                 st.sampled_from(["a cat", "\x00\x07\x1b[31m", "e\u0301\u200b\U0001f600", "\ud7ff\ufeff", " ", "\n"]))
PRINTABLE = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), max_size=30)
JOB_IDS = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=6)
UINT_LIMITS = {descriptor.FieldDescriptor.TYPE_UINT32: 2**32 - 1, descriptor.FieldDescriptor.TYPE_UINT64: 2**64 - 1}


def bounds(info: Any) -> tuple[float | None, float | None]:
    return (info.minimum if info.HasField("minimum") else None, info.maximum if info.HasField("maximum") else None)


def default_of(info: Any) -> Any:
    """A field's reported default (whole numbers as ints), or None."""
    value = json_format.MessageToDict(info.default_value) if info.HasField("default_value") else None
    return int(value) if isinstance(value, float) and value.is_integer() else value


def grid_values(info: Any, whole: bool, top: int) -> st.SearchStrategy[Any]:
    """Values a field accepts: its default, its bounds and the grid points at them, and any in between."""
    low, high = bounds(info)
    low = 0 if low is None else low
    high = top if high is None or (whole and high >= top) else high
    if not whole:
        return st.one_of(st.sampled_from([low, high]), st.floats(low, high, width=32))
    grid, remainder = info.multiple_of or 1, info.remainder if info.multiple_of else 0
    first = math.ceil((int(low) - remainder) / grid)
    last = (int(high) - remainder) // grid
    on_grid = st.integers(first, last).map(lambda k: k * grid + remainder)
    ends = [first * grid + remainder, last * grid + remainder, default_of(info)]
    return st.one_of(st.sampled_from([int(v) for v in ends if v is not None]), on_grid)


def hostile_values(info: Any, whole: bool, top: int) -> st.SearchStrategy[Any]:
    """Values just outside a field's bounds and grid, and anything its type holds."""
    low, high = bounds(info)
    step = 1 if whole else 1e-3
    edges = [v for v in (None if low is None else low - step, None if high is None else high + step) if v is not None]
    if info.multiple_of:
        grid, default = info.multiple_of, default_of(info) or 0
        edges += [default + 1, default - 1, grid + info.remainder + 1, grid * 1000 + info.remainder]
    if whole:
        edges = [int(v) for v in edges if 0 <= v <= top]
        return st.one_of(st.sampled_from(edges or [top]), st.integers(0, top))
    return st.one_of(st.sampled_from(edges or [0.0]), st.floats(width=32),
                     st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1.0]))


def field_values(field: descriptor.FieldDescriptor, info: Any | None, hostile: bool) -> st.SearchStrategy[Any]:
    """Values of one request field, accepted ones or (``hostile``) any; ``info`` is None for a field the model does
    not take."""
    kind, name = field.type, field.name
    if name == "image":
        return images if hostile else pictures()
    if kind == descriptor.FieldDescriptor.TYPE_STRING:
        if name == "job_id":
            return st.one_of(TEXT, st.text(min_size=120, max_size=140)) if hostile else st.one_of(st.just(""), JOB_IDS)
        most = int(bounds(info)[1] or 200) if info is not None else 200
        return st.one_of(TEXT, st.text(min_size=most - 1, max_size=most + 2)) if hostile else PRINTABLE
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == descriptor.FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([value.number for value in field.enum_type.values])
    whole = kind in UINT_LIMITS
    if info is None:
        return st.integers(0, 100) if whole else st.floats(0, 10, width=32)
    top = UINT_LIMITS.get(kind, 0)
    return hostile_values(info, whole, top) if hostile else grid_values(info, whole, top)


@st.composite
def requests(draw: st.DrawFn, message: Any, models: list[Any], relate: Callable[..., None] | None = None) -> Any:
    """A request message for one of ``models`` (ListModels' ModelInfo). A few fields (none in many cases) are
    hostile: any value, or set though the model does not take them; the others are unset or accepted values.
    ``relate`` then sets some fields jointly (pairs that must agree)."""
    model = draw(st.sampled_from(models))
    infos = {info.name: info for info in model.fields}
    names = [field.name for field in message.DESCRIPTOR.fields]
    hostile = set(draw(st.lists(st.sampled_from(names), max_size=3)))
    named = draw(st.sampled_from([model.model_id, ""]))  # the model by name, or as the default
    values: dict[str, Any] = {"model_id": draw(TEXT) if "model_id" in hostile else named}
    for field in message.DESCRIPTOR.fields:
        info = infos.get(field.name)
        if field.name == "model_id" or (info is None and field.name not in hostile):
            continue
        if field.name == "image" or draw(st.booleans()):
            values[field.name] = draw(field_values(field, info, field.name in hostile))
    if relate is not None:
        relate(draw, values, model)
    return message(**values)


# Real servers on their own event loop, for blocking clients and hypothesis --------------------------------------


@contextlib.contextmanager
def served_in_thread(open_server: Callable[[], contextlib.AbstractAsyncContextManager[Any]]) -> Iterator[Any]:
    """Run ``open_server()`` (an async context manager yielding a server) on an event loop of its own thread, so
    that tests drive it with blocking calls; yields what it yields and closes it on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server-loop", daemon=True)
    thread.start()
    stop = asyncio.Event()
    ready: asyncio.Future[Any] = loop.create_future()

    async def hold() -> None:
        try:
            async with open_server() as server:
                ready.set_result(server)
                await stop.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    held = asyncio.run_coroutine_threadsafe(hold(), loop)
    try:
        yield asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=300)
    finally:
        loop.call_soon_threadsafe(stop.set)
        held.result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


async def _wait(future: asyncio.Future[Any]) -> Any:
    return await future


# Raw request bytes and metadata -----------------------------------------------------------------------------------

# Every method of both services, how it is called, and its request type.
METHODS = {
    "/imagewire.caption.v1.CaptionService/Caption": "unary",
    "/imagewire.caption.v1.CaptionService/ListModels": "unary",
    "/imagewire.animate.v1.AnimateService/Animate": "stream",
    "/imagewire.animate.v1.AnimateService/WatchAnimation": "stream",
    "/imagewire.animate.v1.AnimateService/CancelAnimation": "unary",
    "/imagewire.animate.v1.AnimateService/ListModels": "unary",
    "/grpc.health.v1.Health/Check": "unary",
}
# Invalid UTF-8: a lone continuation byte, an overlong encoding, a surrogate, a sequence cut short.
BAD_UTF8 = [b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"ok\xff"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


@st.composite
def raw_requests(draw: st.DrawFn, valid: bytes) -> bytes:
    """Request bytes: ``valid`` (a real request) cut short or with bytes flipped, garbage, or a string field
    (any number) holding invalid UTF-8."""
    kind = draw(st.sampled_from(["truncated", "flipped", "garbage", "bad_utf8"]))
    if kind == "truncated":
        return valid[: draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "flipped":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=64))
    text = draw(st.sampled_from(BAD_UTF8))
    field = draw(st.integers(1, 25))
    return valid + _varint(field << 3 | 2) + _varint(len(text)) + text


# Metadata values a caller may try: non-ASCII, control characters, long, empty.
METADATA_TEXT = st.one_of(st.text(max_size=20), st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
                          st.sampled_from(["ünï", "new\nline", "a\x00b", "tab\t", " ", "", "x" * 200, "\u200b"]))
