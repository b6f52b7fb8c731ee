"""Safe decoding of client-supplied images into RGB PIL images, within a memory budget.

A small encoded file can hold a huge image (a 280 KB PNG of 6000 x 6000 16-bit RGBA pixels), and decoding it
takes memory in proportion to its pixels, not its bytes: eight at once took a captioner from 0.4 to 3.8 GB, and it
kept 2.9 GB afterwards. So the decoding of every request in the process shares one budget of bytes
(:class:`DecodeBudget`, ``ImageLimits.decode_budget_bytes``): a decode reserves what its pixels will take, from
the header, before any is decompressed, and waits while the budget is full (RESOURCE_EXHAUSTED after
``decode_wait_s``). A decoded image larger than any model looks at (:data:`MAX_SIDE`) is reduced at once by a
box filter, so what a request holds while it waits for the model is small. When the last decode in flight ends,
the freed memory is handed back to the system (glibc keeps freed blocks of this size otherwise).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import cast

from imagewire.limits import MAX_IMAGE_BYTES
from PIL import Image, ImageOps, UnidentifiedImageError

from imagewire_serving.errors import InvalidArgument, Overloaded

_LOGGER = logging.getLogger(__name__)

# The formats the contract promises; Pillow would otherwise sniff dozens more (and their parsers' bugs).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# About 6000 x 6000: far above what any caption or video model looks at, far below what exhausts memory.
MAX_IMAGE_PIXELS = 36_000_000
# The longest side a decoded image keeps: larger than any model here looks at (Idefics3's image splitting sees
# 1456, Florence-2 768, BLIP 384, SVD 1024), so reducing to it changes no model's input much and bounds what a
# request holds after decoding to 2048 x 2048 pixels.
MAX_SIDE = 2048
# The bytes all decodes in flight may take together: two of the largest images (36 MP, 4 bytes a pixel, and one
# full-size conversion: 288 MB each) at once.
DECODE_BUDGET_BYTES = 640 * 2**20
# The size of one strip of rows while reducing.
_STRIP_BYTES = 8 * 2**20
# The key of a decoded image's ``info`` holding the size it was sent at (before any reduction): usage counts it.
SOURCE_SIZE = "imagewire.source_size"
# How long a decode waits for room in the budget before RESOURCE_EXHAUSTED.
DECODE_WAIT_S = 30.0


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what a client may send (encoded size, decoded pixel count) and on the memory decoding takes."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    decode_budget_bytes: int = DECODE_BUDGET_BYTES
    decode_wait_s: float = DECODE_WAIT_S


def working_bytes(width: int, height: int) -> int:
    """What decoding a ``width`` x ``height`` image takes at most: Pillow's 4 bytes a pixel (RGBA, I, F; fewer
    for L, P, I;16) and one full-size conversion, plus the reduced copy."""
    side = max(width, height)
    factor = math.ceil(side / MAX_SIDE) if side > MAX_SIDE else 1
    return width * height * 4 * 2 + (width // factor) * (height // factor) * 4


class DecodeBudget:
    """The bytes the process's image decodes may take together; a decode reserves its share before it starts.

    A share larger than the whole budget is granted when nothing else is reserved, so no valid image waits
    forever.
    """

    def __init__(self) -> None:
        self._reserved = 0
        self._changed = threading.Condition()

    @property
    def reserved(self) -> int:
        return self._reserved

    def reserve(self, size: int, limits: ImageLimits) -> None:
        """Wait (at most ``limits.decode_wait_s``) until ``size`` bytes fit, then reserve them; Overloaded if
        they never did."""
        deadline = time.monotonic() + limits.decode_wait_s
        with self._changed:
            while self._reserved and self._reserved + size > limits.decode_budget_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Overloaded(f"the server's memory for decoding images ({limits.decode_budget_bytes} bytes) "
                                     f"stayed full for {limits.decode_wait_s:g} s; retry later")
                self._changed.wait(left)
            self._reserved += size

    def release(self, size: int) -> None:
        with self._changed:
            self._reserved -= size
            idle = self._reserved == 0
            self._changed.notify_all()
        if idle:
            _give_back_memory()


#: The process's one budget: both engines (and every request) decode within it.
BUDGET = DecodeBudget()
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if ctypes.util.find_library("c") else None


def _give_back_memory() -> None:
    """Return the heap's free memory to the system: glibc keeps freed blocks of a decode's size (Pillow's are
    16 MB, under glibc's dynamic mmap threshold once a large block has been freed)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), *, field: str = "image") -> Image.Image:
    """Decode encoded image bytes into an RGB image, or raise InvalidArgument naming the problem.

    EXIF orientation is applied, alpha is composited onto white, an animated image yields its first frame, and
    one larger than MAX_SIDE is reduced (``info[SOURCE_SIZE]`` keeps the size it was sent at). The pixel count
    is checked from the header, before any pixel data is decompressed, and the decoding waits for its share of
    the memory budget (Overloaded when it stays full).
    """
    if not data:
        raise InvalidArgument("image is empty", field=field)
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"image is {len(data)} bytes; the limit is {limits.max_bytes}", field=field)
    with warnings.catch_warnings():
        # Pillow's own bomb warning is redundant with the explicit limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            raise InvalidArgument(
                f"image is not a decodable {'/'.join(ALLOWED_FORMATS)} file", field=field
            ) from None
        except Image.DecompressionBombError as error:
            raise InvalidArgument(f"image has too many pixels: {error}", field=field) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InvalidArgument(f"image header is corrupt: {error}", field=field) from None
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidArgument(f"image has no pixels ({width}x{height})", field=field)
        if width * height > limits.max_pixels:
            raise InvalidArgument(
                f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}",
                field=field,
            )
        share = working_bytes(width, height)
        BUDGET.reserve(share, limits)
        try:
            decoded = _decoded(image, field)
            decoded.info[SOURCE_SIZE] = (width, height)
            if decoded is not image:
                image.close()  # its full-size pixels go before the budget counts them gone
            return decoded
        finally:
            BUDGET.release(share)


def _decoded(image: Image.Image, field: str) -> Image.Image:
    """The opened ``image``'s pixels as RGB: oriented, reduced to MAX_SIDE, converted."""
    try:
        image.load()  # the first frame of an animation
        reduced = _reduced(image)  # first: transposing copies the image
        return _to_rgb(ImageOps.exif_transpose(reduced) or reduced)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError) as e:
        # Pillow signals truncated or corrupt pixel data with an assortment of exception types.
        _LOGGER.debug("image decode failed", exc_info=True)
        raise InvalidArgument(f"image data is truncated or corrupt: {e}", field=field) from None


def _reduced(image: Image.Image) -> Image.Image:
    """``image`` with its longest side at most MAX_SIDE: reduced by a whole factor (a box filter), a strip of rows
    at a time (Image.reduce of the whole image takes another full-size copy)."""
    side = max(image.size)
    if side <= MAX_SIDE:
        return image
    if image.mode not in ("RGB", "RGBA", "L", "LA", "I", "F", "CMYK", "YCbCr"):  # those Image.reduce takes
        image = _to_rgb(image)
    factor = math.ceil(side / MAX_SIDE)
    width, height = image.size
    rows = max(1, _STRIP_BYTES // (width * 4 * factor)) * factor
    reduced = Image.new(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        reduced.paste(image.crop((0, top, width, min(top + rows, height))).reduce(factor), (0, top // factor))
    return reduced


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # Wide greyscale: scale to 8 bits instead of letting conversion clip everything above 255.
        image = image.convert("F")
        # One band, so (min, max) as floats; Pillow's types also allow the per-band tuples of a multi-band image.
        low, high = cast(tuple[float, float], image.getextrema())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = image.point(lambda value: (value - low) * scale).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
