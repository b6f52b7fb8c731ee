"""The TypeScript client package (client/ts) type-checks, generated code included, and its helpers' own tests pass."""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_the_package_builds_and_its_helper_tests_pass(typescript_client: Path) -> None:
    # The fixture built it with tsc in strict mode: a generated module that no longer fits the helpers fails there.
    tests = subprocess.run(["npm", "test", "--silent"], cwd=typescript_client, capture_output=True, text=True,
                           timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "# fail 0" in tests.stdout and "# pass 0" not in tests.stdout
