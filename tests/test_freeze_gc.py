"""freeze_gc: collect + freeze exactly once per fork, in the forking process only."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import pytest

import forkguard

from .forking import run_in_child


@pytest.fixture(autouse=True)
def _unfreeze():
    yield
    gc.unfreeze()


def test_off_by_default():
    forkguard.install()
    before = gc.get_freeze_count()
    result = run_in_child(lambda: forkguard.stats()["gc_freezes"])
    assert result["value"] == 0
    assert gc.get_freeze_count() == before
    assert forkguard.stats()["gc_freezes"] == 0


def test_master_freezes_once_per_fork_and_children_do_not_refreeze():
    forkguard.install(freeze_gc=True)
    garbage = []
    garbage.append(garbage)  # a cycle: collected, not frozen
    del garbage
    seen = []
    for _ in range(3):
        result = run_in_child(lambda: (gc.get_freeze_count(), forkguard.stats()["gc_freezes"]))
        assert result["ok"], result
        seen.append(result["value"])
    assert forkguard.stats()["gc_freezes"] == 3  # one per fork, in the parent
    assert all(count > 1000 and child_freezes == 0 for count, child_freezes in seen)


def test_a_worker_that_forks_again_does_not_freeze():
    """Only the process that turned the freeze on is a pre-fork master; its workers inherit the
    setting, but their own forks (helpers, multiprocessing) must not pay a full collection."""
    forkguard.install(freeze_gc=True)
    before = forkguard.stats()["gc_freezes"]

    def worker() -> object:
        frozen_before = gc.get_freeze_count()
        grandchild = run_in_child(lambda: forkguard.stats()["gc_freezes"])
        return {
            "grandchild_ok": grandchild["ok"],
            "grandchild_freezes": grandchild["value"],
            "worker_freezes": forkguard.stats()["gc_freezes"],
            "frozen_grew": gc.get_freeze_count() > frozen_before,
        }

    result = run_in_child(worker)
    assert result["ok"], result
    assert result["value"] == {
        "grandchild_ok": True,
        "grandchild_freezes": 0,
        "worker_freezes": 0,
        "frozen_grew": False,
    }
    assert forkguard.stats()["gc_freezes"] == before + 1  # the master's one fork


def test_a_master_that_daemonized_after_import_still_freezes(tmp_path):
    """gunicorn --daemon --preload imports the app, then forks twice and carries on as the
    grandchild: that process is the master now, and its worker forks must still freeze."""
    out = tmp_path / "freezes"
    script = f"""
import os, time, forkguard
forkguard.install(freeze_gc=True)
importer = os.getpid()
if os.fork():
    os._exit(0)  # the importing process goes away, as a daemonizing master's does
deadline = time.monotonic() + 20
while os.getppid() == importer and time.monotonic() < deadline:
    time.sleep(0.01)
before = forkguard.stats()["gc_freezes"]
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
with open({str(out)!r}, "w") as fh:
    fh.write(str(forkguard.stats()["gc_freezes"] - before))
"""
    subprocess.run([sys.executable, "-c", script], timeout=60, check=True)
    deadline = time.monotonic() + 30
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline, "the daemonized process did not report"
        time.sleep(0.05)
    assert out.read_text() == "1"


def test_ctypes_fork_does_not_freeze():
    """A fork from C runs no pre-fork hook: nothing is frozen behind the user's back."""
    forkguard.install(freeze_gc=True)
    before = forkguard.stats()["gc_freezes"]
    result = run_in_child(lambda: forkguard.stats()["gc_freezes"], "ctypes")
    assert result["value"] == 0
    assert forkguard.stats()["gc_freezes"] == before


def test_environment_switch_and_bad_value():
    ok = subprocess.run(
        [
            sys.executable,
            "-c",
            "import forkguard, os, gc; forkguard.install(); pid = os.fork()\n"
            "if pid == 0: os._exit(0)\n"
            "os.waitpid(pid, 0); print(gc.get_freeze_count() > 0)",
        ],
        env={**os.environ, "FORKGUARD_FREEZE_GC": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.stdout.strip() == "True", ok.stderr
    bad = subprocess.run(
        [sys.executable, "-c", "import forkguard; forkguard.install()"],
        env={**os.environ, "FORKGUARD_FREEZE_GC": "sometimes"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "FORKGUARD_FREEZE_GC='sometimes' is not a valid flag" in bad.stderr
