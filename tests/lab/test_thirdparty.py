"""``forkguard lab --app`` on an app nobody here wrote: I Hate Money 7.2.1 (Flask,
Flask-SQLAlchemy), installed from PyPI, pinned, unpatched (``lab/thirdparty/ihatemoney``).

It touches the database at import (its ``create_app()`` runs its migrations), so preloaded
without a fix its workers share the master's connection and fail; with forkguard's one line
first in the WSGI module they are clean. The first run builds the app's own venv under
``.thirdparty/`` (about 75 s from PyPI); docs/lab.md shows the full runs (both servers, both
databases, and Wagtail beside it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab.harness.servers import missing_binaries_message

RUN_SH = Path(__file__).resolve().parents[2] / "lab" / "thirdparty" / "ihatemoney" / "run.sh"


@pytest.mark.slow
def test_i_hate_money_is_clean_with_forkguard_and_fails_without(tmp_path: Path) -> None:
    missing = missing_binaries_message(["mysql"])
    if missing:
        pytest.skip(missing)
    env = {**os.environ, "FG_DBS": "mysql", "FG_OUT": str(tmp_path)}
    argv = [str(RUN_SH), "--servers", "gunicorn", "--strategies", "none,forkguard",
            "--requests", "100", "--budget", "150", "--keep-logs"]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
    lab_json = tmp_path / "mysql" / "lab.json"
    assert lab_json.exists(), (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    cells: dict[str, Any] = {c["strategy"]: c for c in json.loads(lab_json.read_text())["cells"]}
    ours, bare = cells["forkguard"], cells["none"]
    logs = f"(logs in {tmp_path}/mysql/logs)"
    assert ours["error"] is None and bare["error"] is None, (ours["error"], bare["error"], logs)
    assert ours["requests"] >= 50 and ours["clean"], (ours, logs)
    assert ours["worker_pids_seen"] > 4, f"workers were never recycled {logs}"
    assert bare["http_errors"] > 0 and bare["db_errors"] > 0, (bare, logs)
    assert proc.returncode == 0, proc.stdout[-3000:]
