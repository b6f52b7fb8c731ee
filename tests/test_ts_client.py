"""The TypeScript client package (client/ts) type-checks, generated code included, and its helpers' own tests pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "client" / "ts"

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None or not (PACKAGE / "node_modules" / ".bin" / "tsc").exists(),
    reason="needs npm and `npm ci` in client/ts (make setup does it where npm exists)",
)


def test_the_package_builds_and_its_helper_tests_pass() -> None:
    # The build is tsc in strict mode: a generated module that no longer fits the helpers fails here.
    build = subprocess.run(["npm", "run", "--silent", "build"], cwd=PACKAGE, capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    tests = subprocess.run(["npm", "test", "--silent"], cwd=PACKAGE, capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "# fail 0" in tests.stdout and "# pass 0" not in tests.stdout
