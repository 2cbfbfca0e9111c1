"""Fixtures for the lab's tests: the slow integration run is shared by every assertion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab.cli import main as lab_main
from forkguard_lab.harness.pooler import pgbouncer_binary
from forkguard_lab.harness.servers import missing_binaries_message

# The cells the lab's claims need (forkguard clean everywhere; the reported bug
# reproduced; forkguard's workers smaller than lazy loading's), as three small lab runs: each
# run is a cross product, so they are grouped to avoid running cells nobody asserts on. Cells
# stop after --requests (about 2.5 minutes in all on an idle 2-CPU box); the budgets are only
# caps, set loose so that a busy machine (other test suites) gives slow cells, not starved ones.
RUNS = {
    "forkguard": [
        "--servers", "uwsgi,gunicorn",
        "--drivers", "pymysql,mysqlclient,psycopg2,psycopg",
        "--strategies", "forkguard",
        "--requests", "200",
        "--budget", "240",
    ],
    "reported_bug": [
        "--servers", "uwsgi",
        "--drivers", "pymysql,mysqlclient",
        "--strategies", "none,dispose",
        "--requests", "200",
        "--budget", "90",
    ],
    "pooler": [
        "--servers", "uwsgi",
        "--drivers", "psycopg2/pgbouncer-session,psycopg2/pgbouncer-transaction",
        "--strategies", "none,forkguard",
        "--requests", "150",
        "--budget", "120",
    ],
    "clients": [
        "--servers", "uwsgi,gunicorn",
        "--drivers", "pymysql",
        "--strategies", "dispose-noclose,forkguard",
        "--clients",
        "--style", "fsa3",
        "--requests", "150",
        "--budget", "150",
    ],
    "memory": [
        "--servers", "uwsgi,gunicorn",
        "--drivers", "pymysql",
        "--strategies", "lazy",
        "--requests", "150",
        "--budget", "60",
    ],
}  # fmt: skip


@pytest.fixture(scope="session")
def lab_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run the three lab invocations once; {name: {"rc": exit status, "doc": lab.json}}."""
    missing = missing_binaries_message(["mysql", "postgresql"])
    if missing:
        pytest.skip(missing)
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed: run scripts/system-deps.sh")
    out: dict[str, dict[str, Any]] = {}
    for name, argv in RUNS.items():
        outdir = tmp_path_factory.mktemp(f"lab-{name}")
        rc = lab_main([*argv, "--out", str(outdir), "--keep-logs"])
        doc = json.loads((Path(outdir) / "lab.json").read_text())
        out[name] = {"rc": rc, "doc": doc, "dir": Path(outdir)}
    return out
