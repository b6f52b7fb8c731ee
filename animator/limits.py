"""The animator's operator-set bounds and price: declared once, checked on construction, each also a flag."""

from __future__ import annotations

from dataclasses import dataclass

from animator.interpolation import MAX_FACTOR
from imagewire_serving.config import Config, option
from imagewire_serving.images import MAX_IMAGE_PIXELS, ImageLimits

# The smallest video side: the VAE downsamples by 8 and the UNet by 8 more, so smaller frames leave no latent.
MIN_SIDE = 64
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class EngineLimits(Config):
    """Bounds on what an animate request may ask for, the queue, the jobs' lifetime and memory, and the price."""

    max_image_pixels: int = option(MAX_IMAGE_PIXELS, "largest decoded input image, in pixels", minimum=1)
    max_pixels_per_frame: int = option(1024 * 1024, "largest width x height", minimum=MIN_SIDE * MIN_SIDE)
    max_num_frames: int = option(50, "largest num_frames (also bounds decode_chunk_size)", minimum=1)
    max_num_inference_steps: int = option(100, "largest num_inference_steps", minimum=1)
    max_fps: int = option(60, "largest fps (also of the video file: fps x interpolate)", minimum=1)
    max_segments: int = option(8, "largest segments: how many num_frames clips one video may chain", minimum=1)
    max_interpolate: int = option(MAX_FACTOR, "largest interpolate factor (1 turns interpolation off)", minimum=1,
                                  maximum=MAX_FACTOR)
    max_queue: int = option(8, "requests that may wait for the device before RESOURCE_EXHAUSTED", minimum=1)
    usd_per_output_pixel: float = option(1.3563368e-08, "price of one output pixel (width x height x frames)",
                                         minimum=0)
    # A dropped connection comes back within seconds; a minute covers a client's whole backoff.
    detach_grace: float = option(60.0, "seconds a job with no watcher keeps running before it stops (the default "
                                       "of the request's detach_grace_seconds)", minimum=0)
    max_detach_grace: float = option(600.0, "largest detach_grace_seconds a request may ask for", minimum=0)
    retention: float = option(600.0, "seconds a finished job stays readable by WatchAnimation", minimum=0)
    # Every job's video bytes, latest preview and bookkeeping, finished or not; the oldest finished go first.
    retention_bytes: int = option(512 * CHUNK_BYTES, "memory for all jobs' videos, oldest finished evicted first",
                                  minimum=64 * 1024)

    def check(self) -> None:
        if self.detach_grace > self.max_detach_grace:
            raise ValueError(f"--detach-grace ({self.detach_grace:g}) must not exceed --max-detach-grace "
                             f"({self.max_detach_grace:g})")

    @property
    def image(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels)
