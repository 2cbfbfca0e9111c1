"""forkguard.django with a real fork, against the local MariaDB (mysqlclient) and PostgreSQL
(psycopg 3). Each scenario runs in a fresh interpreter: Django's settings are process-global."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]
VENDORS = ("mysql", "postgresql")


def run_scenario(scenario: str, vendor: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integrations.apps.dj_fork_check", scenario, vendor],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("scenario", ["persistent", "adopted", "ctypes"])
def test_child_reconnects_and_parent_keeps_its_session(scenario: str, vendor: str) -> None:
    out = run_scenario(scenario, vendor)
    child = out["child"]
    assert child["ok"], child
    value = child["value"]
    assert value["had_connection"] is False  # dropped before the child's first request
    assert value["inherited_kept"] is True  # kept allocated (its pages stay shared), not freed
    assert value["session"] != out["master_session"]
    assert value["stats"]["connections_neutralized"] == 1
    assert out["parent_error"] is None
    assert out["parent_session_after"] == out["master_session"]


def test_plain_forkguard_install_covers_django() -> None:
    test_child_reconnects_and_parent_keeps_its_session("install_hook", "postgresql")


@pytest.mark.parametrize("vendor", VENDORS)
def test_fork_inside_atomic_block(vendor: str) -> None:
    out = run_scenario("atomic", vendor)
    assert out["child"]["ok"], out["child"]
    assert "Cannot open a new connection in an atomic block" in out["child"]["value"]["error"]
    # No ROLLBACK leaked from the child: both of the parent's inserts committed.
    assert out["rows_after_commit"] == 2
    assert out["parent_error"] is None


@pytest.mark.parametrize("vendor", VENDORS)
def test_without_forkguard_the_childs_close_ends_the_parents_session(vendor: str) -> None:
    out = run_scenario("unprotected", vendor)
    assert out["child"]["value"]["session"] == out["master_session"]  # one shared socket
    assert out["parent_error"] is not None


@pytest.mark.parametrize("vendor", VENDORS)
def test_strict_mode_refuses_the_inherited_connection(vendor: str) -> None:
    out = run_scenario("strict", vendor)
    child = out["child"]
    assert child["ok"], child
    assert child["value"]["error"].startswith("InheritedConnectionError: forkguard: pid")
    assert child["value"]["stats"]["strict_violations"] == 1
    assert out["parent_error"] is None
    assert out["parent_session_after"] == out["master_session"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_warn_mode_names_the_line_that_opened_it(vendor: str) -> None:
    out = run_scenario("warn", vendor)
    value = out["child"]["value"]
    assert value["session"] != out["master_session"]
    [warning] = value["warnings"]
    assert "inherited a" in warning and "dj_fork_check.py" in warning
    assert out["parent_session_after"] == out["master_session"]
