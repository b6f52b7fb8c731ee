"""Flags, environment fallbacks and start-up validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from animator.settings import AnimatorSettings
from captioner.limits import EngineLimits
from captioner.settings import CaptionerSettings
from imagewire_serving.settings import ServiceSettings, env_name


def test_defaults_match_the_contract() -> None:
    s = CaptionerSettings.from_args([])
    assert (s.server.host, s.server.port, s.server.device, s.server.models) == ("127.0.0.1", 50051, "auto", ())
    assert s.server.reflection and s.limits == EngineLimits()


def test_environment_fills_in_and_flags_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = tmp_path / "c"
    local.mkdir()  # a local model directory must exist (checked before the server listens)
    monkeypatch.setenv("IMAGEWIRE_CAPTIONER_PORT", "6000")
    monkeypatch.setenv("IMAGEWIRE_CAPTIONER_MODEL", f"a/b,{local}")
    monkeypatch.setenv("IMAGEWIRE_CAPTIONER_REFLECTION", "false")
    monkeypatch.setenv("IMAGEWIRE_CAPTIONER_MAX_BATCH_DELAY_MS", "2")
    s = CaptionerSettings.from_args([])
    assert s.server.port == 6000 and s.server.models == ("a/b", str(local)) and not s.server.reflection
    assert s.limits.max_batch_delay_ms == 2
    s = CaptionerSettings.from_args(["--port", "7000", "--model", "x", "--model", "y", "--reflection"])
    assert s.server.port == 7000 and s.server.models == ("x", "y") and s.server.reflection


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--port", "70000"], "--port"),
        (["--device", "gpu"], "--device"),
        (["--tls-cert", "/nonexistent"], "--tls-cert and --tls-key"),
        (["--default-num-beams", "9"], "--default-num-beams"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_invalid_settings_are_refused(argv: list[str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        CaptionerSettings.from_args(argv)


def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGEWIRE_CAPTIONER_PORT", "eighty")
    with pytest.raises(SystemExit):
        CaptionerSettings.from_args([])
    assert "IMAGEWIRE_CAPTIONER_PORT" in capsys.readouterr().err


@pytest.mark.parametrize("settings_type", [CaptionerSettings, AnimatorSettings])
def test_every_declared_option_is_a_flag_with_an_environment_variable(
    settings_type: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = settings_type.parser().format_help()
    flags = [action for action in settings_type.parser()._actions if action.option_strings != ["-h", "--help"]]
    assert len(flags) > 15
    for action in flags:
        flag = action.option_strings[0]
        assert env_name(settings_type.env_prefix, flag) in text, flag
    # One value set through the environment reaches the settings of each kind (server, limits, own options).
    monkeypatch.setenv(f"{settings_type.env_prefix}_GRACE", "7")
    monkeypatch.setenv(f"{settings_type.env_prefix}_MAX_QUEUE", "5")
    built = settings_type.from_args([])
    assert built.server.grace_s == 7 and built.limits.max_queue == 5
