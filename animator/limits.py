"""The animator's operator-set bounds and price: declared once, checked on construction, each also a flag."""

from __future__ import annotations

from dataclasses import dataclass

from imagewire_serving.config import Config, option
from imagewire_serving.images import MAX_IMAGE_PIXELS, ImageLimits

# The smallest video side: the VAE downsamples by 8 and the UNet by 8 more, so smaller frames leave no latent.
MIN_SIDE = 64
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class EngineLimits(Config):
    """Bounds on what an animate request may ask for, the queue, the per-request byte budget and the price."""

    max_image_pixels: int = option(MAX_IMAGE_PIXELS, "largest decoded input image, in pixels", minimum=1)
    max_pixels_per_frame: int = option(1024 * 1024, "largest width x height", minimum=MIN_SIDE * MIN_SIDE)
    max_num_frames: int = option(50, "largest num_frames (also bounds decode_chunk_size)", minimum=1)
    max_num_inference_steps: int = option(100, "largest num_inference_steps", minimum=1)
    max_fps: int = option(60, "largest fps", minimum=1)
    max_queue: int = option(8, "requests that may wait for the device before RESOURCE_EXHAUSTED", minimum=1)
    usd_per_output_pixel: float = option(1.3563368e-08, "price of one output pixel (width x height x frames)",
                                         minimum=0)
    # Encoded video a request may have waiting for its reader before the generation pauses.
    max_pending_bytes: int = option(8 * CHUNK_BYTES, "unread video bytes per request before generation pauses",
                                    minimum=1)

    @property
    def image(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels)
