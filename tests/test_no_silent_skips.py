"""Issue 20.5: under `make test` (FORKGUARD_NO_SKIP=1) a test that skips because something is
missing fails the run instead; elsewhere it stays a skip with its reason printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A skip of the kind the suites make when a binary is missing (faults: openssl; lab: mariadbd).
CASE = "tests/test_no_silent_skips.py::test_needs_a_binary_that_is_missing"


def test_needs_a_binary_that_is_missing() -> None:
    if os.environ.get("FG_SKIP_PROBE") != "1":
        return  # only the probe below exercises the skip
    pytest.skip("the probe needs fg-no-such-binary, which is not installed")


@pytest.mark.parametrize(("no_skip", "code"), [("1", 1), ("0", 0)])
def test_a_skip_for_a_missing_binary_fails_make_test(no_skip: str, code: int) -> None:
    env = {**os.environ, "FG_SKIP_PROBE": "1", "FORKGUARD_NO_SKIP": no_skip}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CASE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "fg-no-such-binary, which is not installed" in proc.stdout
