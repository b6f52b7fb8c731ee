"""Safe image decoding: formats, EXIF orientation, modes, animation, corruption and decompression bombs."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import pytest
from PIL import Image

from imagewire_serving.errors import InvalidArgument
from imagewire_serving.images import ImageLimits, decode_image
from tests.support import encode, png


def two_colour(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue: orientation changes are visible."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"lossless": True}), ("GIF", {}), ("BMP", {}), ("TIFF", {})],
)
def test_each_supported_format_decodes_to_rgb(fmt: str, params: dict[str, object]) -> None:
    decoded = decode_image(encode(two_colour(), fmt, **params))
    assert decoded.mode == "RGB"
    assert decoded.size == (40, 20)
    red, blue = decoded.getpixel((5, 10)), decoded.getpixel((35, 10))
    assert red[0] > 200 and red[2] < 60, red
    assert blue[2] > 200 and blue[0] < 60, blue


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(encode(two_colour(), "JPEG", exif=exif, quality=95))
    # Displayed upright, the 40x20 image is 20x40 with red on top.
    assert decoded.size == (20, 40)
    assert decoded.getpixel((10, 5))[0] > 200
    assert decoded.getpixel((10, 35))[2] > 200


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGBA", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    source = two_colour().convert(mode) if mode != "CMYK" else two_colour().convert("CMYK")
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    decoded = decode_image(encode(source, fmt))
    assert decoded.mode == "RGB" and decoded.size == (40, 20)


def test_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(png(image)).getpixel((4, 4)) == (255, 255, 255)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    pixel = decode_image(data).getpixel((8, 8))
    assert pixel[0] > 200 and pixel[1] < 60


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not a decodable"),
        (png(two_colour())[:60], "truncated or corrupt"),
        (b"%PDF-1.4 a different format entirely", "not a decodable"),
    ],
)
def test_bad_bytes_raise_invalid_argument_naming_the_image(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_image(data)
    assert fragment in caught.value.message
    assert caught.value.violations[0].field == "image"


def test_unsupported_format_is_refused_even_if_pillow_reads_it() -> None:
    with pytest.raises(InvalidArgument, match="not a decodable"):
        decode_image(encode(two_colour(), "PPM"))


def test_too_many_encoded_bytes() -> None:
    with pytest.raises(InvalidArgument, match=r"the limit is 10$"):
        decode_image(png(two_colour()), ImageLimits(max_bytes=10))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size, with a tiny compressed body: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_decompression_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(InvalidArgument, match="pixels"):
        decode_image(bomb_png(50_000, 50_000))
    with pytest.raises(InvalidArgument, match="the limit is 1000"):
        decode_image(bomb_png(100, 100), ImageLimits(max_pixels=1000))


def test_decodes_share_one_memory_budget_waiting_then_refusing_when_it_stays_full() -> None:
    """A decode reserves what its pixels take before decompressing any; while the budget is full it waits, and
    after decode_wait_s it is Overloaded (RESOURCE_EXHAUSTED). The reserve is released however the decode ends."""
    from imagewire_serving.errors import Overloaded
    from imagewire_serving.images import BUDGET, ImageLimits, decode_image, working_bytes

    image = png(Image.new("RGB", (300, 200), (1, 2, 3)))
    tight = ImageLimits(decode_budget_bytes=working_bytes(300, 200), decode_wait_s=0.3)
    assert BUDGET.reserved == 0
    BUDGET.reserve(1, tight)  # another decode in flight: this one no longer fits
    freed = threading.Timer(1.0, BUDGET.release, (1,))
    try:
        started = time.monotonic()
        with pytest.raises(Overloaded, match="memory for decoding images"):
            decode_image(image, tight)
        assert 0.3 <= time.monotonic() - started < 5
        freed.start()  # room is made while the next one waits: it goes on
        patient = ImageLimits(decode_budget_bytes=working_bytes(300, 200), decode_wait_s=30)
        assert decode_image(image, patient).size == (300, 200)
    finally:
        if freed.ident is None:  # failed before the timer started: release the stand-in decode here
            BUDGET.release(1)
        else:
            freed.join()
    assert BUDGET.reserved == 0
    with pytest.raises(InvalidArgument):
        decode_image(image[:200], tight)  # truncated: refused, and its share returned
    assert BUDGET.reserved == 0
