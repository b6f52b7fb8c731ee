"""Train the tiny Stable Video Diffusion model that the animator ships as its embedded default::

    python -m animator.training.train --out animator/models/shapes-svd

Built from configs (nothing downloaded): the ``StableVideoDiffusionPipeline`` components at the sizes of
``settings.PRESET``, trained in two stages (``loop``) on clips of :mod:`animator.training.motion`, saved with
``save_pretrained`` (a checkpoint every ``--checkpoint-every`` UNet steps, so a stopped run leaves a usable model)
with ``training.json``. ``python -m animator.training.evaluate`` then measures it and writes the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

# On a shared 2-core machine, OpenMP threads that spin while waiting made training steps 5-10x slower; libgomp
# reads this only when torch loads it, so it must be set before the imports below load torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from animator.tiny.common import save
from animator.tiny.svd import random_pipeline, request_defaults
from animator.training.data import encode_clips
from animator.training.loop import train_unet, train_vae
from animator.training.settings import PRESET, SERVED_DEFAULTS, TRAINING_RECORD, TrainSettings
from captioner.training.loop import seed_everything

_LOGGER = logging.getLogger(__name__)

# The settings that are flags (--vae-steps for ``vae_steps``...); the rest keep their defaults.
_FLAGS: tuple[str, ...] = (
    "out", "seed", "threads", "vae_steps", "vae_clips", "vae_learning_rate", "clips", "unet_steps", "batch_size",
    "learning_rate", "direction_weight", "checkpoint_every",
)


def parse_args(argv: Sequence[str] | None = None) -> TrainSettings:
    """The settings for a command line: a flag per name in ``_FLAGS``, typed and defaulted from the dataclass."""
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in _FLAGS:
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    return replace(defaults, **{name: getattr(args, name) for name in _FLAGS})


def write(pipeline: Any, settings: TrainSettings, record: dict[str, Any]) -> None:
    """Save the pipeline with its request defaults and the training record (settings, times, stage results)."""
    save(pipeline, settings.out, {**request_defaults(PRESET), **SERVED_DEFAULTS},
         processors={"feature_extractor": "CLIPImageProcessor"})
    for weights in settings.out.rglob("*.safetensors"):  # safetensors writes owner-only files
        weights.chmod(0o644)
    training = {"settings": {**asdict(settings), "out": str(settings.out)}, **record}
    (settings.out / TRAINING_RECORD).write_text(json.dumps(training, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    seed_everything(settings.seed, settings.threads)
    started = time.perf_counter()
    pipeline = random_pipeline(PRESET)
    vae_psnr = train_vae(pipeline, settings)
    vae_seconds = time.perf_counter() - started
    data = encode_clips(pipeline, settings)
    encoded = time.perf_counter()
    _LOGGER.info("encoded %d clips in %.0f s", len(data.first_frames), encoded - started - vae_seconds)

    def checkpoint(step: int, loss: float | None = None) -> None:
        write(pipeline, settings, {
            "unet_steps_done": step, "vae_training_psnr_db": round(vae_psnr, 2),
            "unet_loss": None if loss is None else round(loss, 5),
            "seconds": {"vae": round(vae_seconds, 1), "encode": round(encoded - started - vae_seconds, 1),
                        "total": round(time.perf_counter() - started, 1)},
        })
        _LOGGER.info("saved %s after %d UNet steps", settings.out, step)

    loss = train_unet(pipeline, data, settings, checkpoint)
    checkpoint(settings.unet_steps, loss)


if __name__ == "__main__":
    main()
