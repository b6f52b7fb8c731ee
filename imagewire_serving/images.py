"""Safe decoding of client-supplied images into RGB PIL images."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import cast

from imagewire.limits import MAX_IMAGE_BYTES
from PIL import Image, ImageOps, UnidentifiedImageError

from imagewire_serving.errors import InvalidArgument

_LOGGER = logging.getLogger(__name__)

# The formats the contract promises; Pillow would otherwise sniff dozens more (and their parsers' bugs).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# About 6000 x 6000: far above what any caption or video model looks at, far below what exhausts memory.
MAX_IMAGE_PIXELS = 36_000_000


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what a client may send: encoded size and decoded pixel count."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), *, field: str = "image") -> Image.Image:
    """Decode encoded image bytes into an RGB image, or raise InvalidArgument naming the problem.

    EXIF orientation is applied, alpha is composited onto white, and an animated image yields its first
    frame. The pixel count is checked from the header, before any pixel data is decompressed.
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
        try:
            image.load()  # the first frame of an animation
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError) as e:
            # Pillow signals truncated or corrupt pixel data with an assortment of exception types.
            _LOGGER.debug("image decode failed", exc_info=True)
            raise InvalidArgument(f"image data is truncated or corrupt: {e}", field=field) from None


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
