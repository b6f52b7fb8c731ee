"""--compile on the animator: the tiny SVD's denoiser and VAE decoder compiled make the frames of eager.

Apart from the captioner's compile tests (tests/test_compile.py) so that a parallel run (`make test`: pytest-xdist,
a file per worker) builds the two models' packages at once: each file is minutes of inductor's work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from animator import tiny as animator_tiny
from animator.quality import psnr
from imagewire_serving import compiling


@pytest.mark.timeout(900)
def test_a_compiled_denoiser_and_decoder_make_the_frames_of_eager(tmp_path: Path) -> None:
    """Video frames at least 40 dB PSNR against eager in the same dtype (the tiny SVD, float32, its smallest
    video: compiling the two parts is the cost, so one shape, in process; the served path is the captioner's)."""
    from animator import families
    from animator.engine import warm_up_image
    from animator.limits import EngineLimits as AnimateLimits
    from animator.params import warm_up_params

    cpu = torch.device("cpu")
    backend = families.load("tiny", str(animator_tiny.ensure_model("tiny")), cpu, torch.float32)
    params = warm_up_params(backend.accepts, AnimateLimits())

    def frames() -> np.ndarray:
        with torch.inference_mode():
            latents = backend.denoise(warm_up_image(), params, lambda step: None)
            return np.concatenate([np.asarray(chunk, dtype=np.float64) for chunk in backend.decode(latents, params)])

    eager = frames()
    compiling.configure(tmp_path, cpu)
    for part in backend.compile_parts():
        part.compile(cpu)
    compiled = frames()
    assert [part.name for part in backend.compile_parts() if part.compiled] == ["denoiser", "vae decoder"]
    assert compiled.shape == eager.shape and len(compiled) == params.num_frames
    peak = 255.0 if eager.max() > 1.5 else 1.0
    assert psnr(compiled / peak * 255, eager / peak * 255) >= 40
