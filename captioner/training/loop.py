"""The training loop: seeded and deterministic, so a run gives bit-identical weights on the same machine.

Loss: BLIP's caption loss plus, during training only, a per-patch shape loss from a linear head on the vision
encoder; the head is never saved.
"""

from __future__ import annotations

import logging
import math
import random
import time

import numpy as np
import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from captioner.training.batches import Batch, training_batch
from captioner.training.evaluation import monitor
from captioner.training.model import build_model
from captioner.training.settings import TrainSettings
from captioner.training.shapes import SHAPES

_LOGGER = logging.getLogger(__name__)


def seed_everything(seed: int, threads: int) -> None:
    """Seed every generator and fix the thread count and kernels: what makes two runs give the same weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Trainer:
    """The model, the training-only patch head and the optimizer over both."""

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings
        # Built in this order from the seeded generator: the model's weights first, then the head's.
        self.model, self.processor = build_model(settings)
        self.model.train()
        # Naming every patch's shape gives the vision encoder dense supervision. With the caption loss alone,
        # colours were learned in a few hundred steps but shapes stayed near chance for well over a thousand.
        self.patch_head = torch.nn.Linear(settings.hidden_size, len(SHAPES) + 1)
        self.trained = [*self.model.parameters(), *self.patch_head.parameters()]
        self.optimizer = torch.optim.AdamW(self.trained, lr=settings.learning_rate, weight_decay=0.01)

    def step(self, batch: Batch, rate: float) -> tuple[float, float]:
        """One optimizer step; returns the caption loss and the patch loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        output = self.model(
            pixel_values=batch.pixel_values,
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
        )
        patch_logits = self.patch_head(output.last_hidden_state[:, 1:, :])
        patch_loss = torch.nn.functional.cross_entropy(patch_logits.flatten(0, 1), batch.patch_labels.flatten())
        loss = output.loss + self.settings.patch_loss_weight * patch_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trained, 1.0)
        self.optimizer.step()
        return output.loss.item(), patch_loss.item()


def train(settings: TrainSettings) -> tuple[BlipForConditionalGeneration, BlipProcessor, float]:
    """Train from scratch; returns the model (in eval mode), its processor and the seconds it took."""
    seed_everything(settings.seed, settings.threads)
    trainer = _Trainer(settings)
    model, processor = trainer.model, trainer.processor
    parameters = sum(p.numel() for p in model.parameters())
    _LOGGER.info("training %d parameters for %d steps of %d", parameters, settings.steps, settings.batch_size)
    started = time.perf_counter()
    running = (0.0, 0.0)  # smoothed caption and patch losses, for the log only
    for step in range(settings.steps):
        losses = trainer.step(training_batch(step, settings, processor), learning_rate(step, settings))
        running = (0.98 * running[0] + 0.02 * losses[0], 0.98 * running[1] + 0.02 * losses[1]) if step else losses
        if step % 100 == 0 or step == settings.steps - 1:
            _LOGGER.info("step %d caption loss %.4f patch loss %.4f (%.0f s)", step, *running,
                         time.perf_counter() - started)
        if settings.monitor_every and step and step % settings.monitor_every == 0:
            _LOGGER.info("step %d monitor: %s", step, monitor(model, processor))
            model.train()
    model.eval()
    return model, processor, time.perf_counter() - started
