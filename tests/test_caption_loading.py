"""A checkpoint the captioner cannot serve is a one-line start-up error naming the model, never a server that
serves noise: weights of another family, weights of the wrong shapes, a family no module serves, a chat model
without its chat template."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from captioner import tiny
from captioner.families import families, load_captioner
from tests.support import script


def failed_start(model: Path) -> str:
    """The one stderr line of a captioner given ``model`` (it must exit 2 before listening for long)."""
    done = subprocess.run([script("imagewire-captioner"), "--port", "0", "--model", str(model)], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def copy_of(preset: str, out: Path) -> Path:
    shutil.copytree(tiny.ensure_model(preset), out)
    return out


def test_a_blip_directory_holding_another_familys_weights_refuses_to_start(tmp_path: Path) -> None:
    # What once started and served empty captions: every BLIP weight missing (left random), every GIT one unused.
    model = copy_of("tiny", tmp_path / "blip-with-git-weights")
    shutil.copy(tiny.ensure_model("tiny-git") / "model.safetensors", model / "model.safetensors")
    line = failed_start(model)
    assert line.startswith(f"imagewire-captioner: error: --model {model}: cannot load it: its model "
                           "(BlipForConditionalGeneration): the weights do not fit the class: "), line
    assert " missing (they would be random): text_decoder." in line
    assert " unexpected (the checkpoint has them, the class does not): git." in line


def test_a_family_no_module_serves_refuses_to_start_naming_those_served(tmp_path: Path) -> None:
    from transformers import Blip2Config

    model = tmp_path / "blip2"
    Blip2Config().save_pretrained(model)  # the config alone: the family is refused before any weight is read
    served = ", ".join(sorted(families()))
    assert failed_start(model) == (f"imagewire-captioner: error: --model {model}: cannot load it: it is a 'blip-2' "
                                   f"model; the caption families served are {served} (docs/models.md)")


def test_weights_of_the_wrong_shapes_are_named(tmp_path: Path) -> None:
    model = copy_of("tiny-git", tmp_path / "git-wider-than-its-weights")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    wrong_shape = r"its model \(GitForCausalLM\): the weights do not fit the class: \d+ of the wrong shape: git\."
    with pytest.raises(ValueError, match=wrong_shape):
        load_captioner(str(model), torch.device("cpu"), torch.float32)


def test_a_chat_model_without_its_chat_template_is_refused(tmp_path: Path) -> None:
    model = copy_of("tiny-idefics3", tmp_path / "idefics3-without-template")
    for name in ("chat_template.jinja", "chat_template.json"):
        (model / name).unlink(missing_ok=True)
    config = json.loads((model / "processor_config.json").read_text())
    config.pop("chat_template", None)
    (model / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="its processor has no chat template"):
        load_captioner(str(model), torch.device("cpu"), torch.float32)


def test_every_served_model_type_loads_through_the_auto_classes() -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    assert set(families()) <= set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
