"""The benchmark's request images: distinct photo-sized PNGs, made before any timing starts."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


class ImagePool:
    """Distinct encoded PNGs (random shapes on noise), handed out round-robin so every batch sees different images.

    Made before any timing starts, so encoding costs the load generator nothing during a measurement.
    """

    def __init__(self, count: int, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images: list[bytes] = [self._draw(rng, size) for _ in range(count)]
        self._next = 0

    @staticmethod
    def _draw(rng: np.random.Generator, size: int) -> bytes:
        # Noise keeps the PNG photo-sized (~100 KB at 224 px), so the transports carry realistic payloads.
        pixels = rng.integers(0, 64, (size, size, 3), dtype=np.uint8) + rng.integers(0, 192, 3, dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
            extent = int(rng.integers(size // 8, size // 3))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x0 + extent, y0 + extent), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    def take(self) -> bytes:
        """The next encoded image."""
        image = self.images[self._next % len(self.images)]
        self._next += 1
        return image

    def decoded(self, count: int) -> list[Image.Image]:
        """The next ``count`` images decoded the way the servers decode them."""
        from imagewire_serving.images import decode_image

        return [decode_image(self.take()) for _ in range(count)]

    def mean_size(self) -> int:
        """The average encoded size in bytes."""
        return sum(map(len, self.images)) // len(self.images)
