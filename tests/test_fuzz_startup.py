"""Start-up fuzz: bad flags and environment variables for both console scripts, drawn from the declarations
(imagewire_serving.settings.declared_flags: each flag's type, bounds and choices) and from the rules between flags.

Every one must end the process with exit status 2 and a message of one or two lines naming the flag or the
variable, with no traceback. The settings are checked before torch and the models are imported, so most cases
cost a fraction of a second.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
from hypothesis import example, given
from hypothesis import strategies as st

from animator.limits import EngineLimits as AnimateLimits
from animator.params import FrameGrid, ModelFields, unservable
from animator.settings import AnimatorSettings
from captioner.settings import CaptionerSettings
from imagewire_serving.settings import Flag, ServiceSettings, declared_flags, env_name
from tests.fuzzing import budget, scaled_timeout, tally
from tests.support import script

SERVICES: dict[str, type[ServiceSettings]] = {"imagewire-captioner": CaptionerSettings,
                                              "imagewire-animator": AnimatorSettings}
# Pairs that are wrong together though each value is fine alone, and values only loading can refuse.
CONFLICTS = [
    ("imagewire-animator", ["--detach-grace", "100", "--max-detach-grace", "10"], "--detach-grace"),
    ("imagewire-captioner", ["--default-max-new-tokens", "9", "--max-new-tokens-limit", "8"],
     "--default-max-new-tokens"),
    ("imagewire-captioner", ["--default-num-beams", "3", "--num-beams-limit", "2"], "--default-num-beams"),
    ("imagewire-captioner", ["--tls-cert", "/etc/hostname"], "--tls-cert"),
    ("imagewire-animator", ["--tls-client-ca", "/etc/hostname"], "--tls-client-ca"),
    ("imagewire-animator", ["--safety-checker", " "], "--safety-checker"),
]


def bad_values(flag: Flag) -> list[str]:
    """Values the declaration refuses: of the wrong type, past its bounds, outside its choices."""
    spec, kind = flag.spec, flag.parse
    if spec.boolean:
        return ["maybe", "2"]  # through the environment only: the flag takes no value
    if spec.choices:
        return ["bogus", spec.choices[0] + "x"]
    values = []
    if kind in (int, float):
        values += ["abc", "", "1e999x", "0x"]
        if spec.minimum is not None:
            values += [f"{spec.minimum - 1:g}", "-1" if spec.minimum >= 0 else "-1e30"]
        if spec.maximum is not None:
            values += [f"{spec.maximum + 1:g}", str(10**30)]
        if kind is int:
            values.append("1.5")
        else:
            values += ["nan", "inf", "-inf"]
    if flag.path[-1] == "device":
        values += ["gpu", "cuda:x", "cuda:-1", "CPU ", "tpu:0"]
    if flag.path[-1] in ("tls_cert", "tls_key", "tls_client_ca"):
        values += ["/nonexistent/cert.pem"]
    return values


def cases() -> list[tuple[str, Flag, str]]:
    found = []
    for command, settings in SERVICES.items():
        for flag in declared_flags(settings):
            found += [(command, flag, value) for value in bad_values(flag)]
    return found


CASES = cases()


def refused(command: str, args: list[str], env: dict[str, str], names: list[str], *, loads: bool = False) -> str:
    """Run a server that must refuse to start; its one- or two-line message, which names one of ``names``.
    Unless it ``loads`` (binds its port, says so, then fails loading), it refuses before it listens."""
    # Port 0 unless the port is what is fuzzed (an explicit flag would win over a bad variable).
    port = [] if "--port" in args or any(name.endswith("_PORT") for name in env) else ["--port", "0"]
    done = subprocess.run([script(command), *port, *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **env})
    lines = done.stderr.strip().splitlines()
    tally("start-up", grpc.StatusCode.INVALID_ARGUMENT if done.returncode == 2 else grpc.StatusCode.UNKNOWN)
    assert done.returncode == 2, (args, env, done.stderr[-2000:])
    assert 1 <= len(lines) <= 2 and "Traceback" not in done.stderr, done.stderr
    assert loads or not done.stdout, done.stdout
    assert any(name in done.stderr for name in names), (names, done.stderr)
    return lines[0]


@scaled_timeout
@budget(30)
@given(st.sampled_from(CASES), st.booleans())
@example(("imagewire-animator", next(f for f in declared_flags(AnimatorSettings) if f.path[-1] == "port"), "abc"),
         False)  # argparse's own error printed its 30-line usage before the one line
@example(("imagewire-captioner", next(f for f in declared_flags(CaptionerSettings) if f.path[-1] == "port"), "-1"),
         True)
def test_a_bad_flag_or_variable_is_refused_in_one_line_naming_it(case: tuple[str, Flag, str], by_env: bool) -> None:
    command, flag, value = case
    name = flag.spec.flag_for(flag.path[-1])
    variable = env_name(SERVICES[command].env_prefix, name)
    if flag.spec.boolean or (by_env and value):  # an empty variable means unset
        refused(command, [], {variable: value}, [variable, name])
    else:
        refused(command, [name, value], {}, [name])


@budget(len(CONFLICTS))
@given(st.sampled_from(CONFLICTS))
def test_flags_wrong_together_are_refused_naming_them(case: tuple[str, list[str], str]) -> None:
    command, args, named = case
    refused(command, args, {}, [named])


def test_a_missing_model_named_by_the_environment_is_refused_naming_it() -> None:
    """Refused before it listens, naming the variable (it was refused once loading had started, after the
    listening line a supervisor waits for); tests/test_startup.py has the flags' cases and devices."""
    refused("imagewire-captioner", [], {"IMAGEWIRE_CAPTIONER_MODEL": "/nonexistent/a,/nonexistent/b"},
            ["IMAGEWIRE_CAPTIONER_MODEL (--model) /nonexistent/a: no such directory"])


def test_bad_settings_are_refused_before_torch_is_imported() -> None:
    """A bad flag once took 4 s to refuse (the App, torch and the model libraries were imported first)."""
    check = ("import sys\nfrom {0}.__main__ import main\nassert main(['--max-queue', '0']) == 2\n"
             "assert 'torch' not in sys.modules, 'torch was imported'")
    for service in ("captioner", "animator"):
        done = subprocess.run([sys.executable, "-c", check.format(service)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == f"imagewire-{service}: error: --max-queue must be >= 1, not 0"


def test_every_declared_flag_has_bad_values_drawn() -> None:
    """The fuzz covers each flag that has a type, bounds or choices to violate (strings without rules aside)."""
    uncovered = {flag.spec.flag_for(flag.path[-1]) for settings in SERVICES.values()
                 for flag in declared_flags(settings) if not bad_values(flag)}
    assert uncovered <= {"--host", "--model", "--otlp-endpoint", "--auth-token", "--safety-checker"}, uncovered
    assert len(CASES) > 100


def test_limits_that_leave_a_model_nothing_to_run_are_a_start_up_error_naming_the_flag() -> None:
    """Found by hand beside the fuzz: --max-num-frames 5 with LTX-Video (8k + 1 frames) warmed up into a request
    error ("num_frames: must be 9..5, not 9") instead of naming the flag."""
    ltx = ModelFields("ltx", {}, frames=FrameGrid(minimum=9, multiple=8, remainder=1), chunk_multiple=8, min_steps=2)
    assert unservable(ltx, AnimateLimits(max_num_frames=5)) == (
        "--max-num-frames 5: ltx models make at least 9 frames (and decode at least as many at once)")
    assert unservable(ltx, AnimateLimits(max_num_inference_steps=1)) == (
        "--max-num-inference-steps 1: ltx models take at least 2 steps")
    assert unservable(ltx, AnimateLimits(max_num_frames=9, max_num_inference_steps=2)) is None
