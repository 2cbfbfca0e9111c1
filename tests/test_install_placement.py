"""Issue 17: ``forkguard.install()`` protects wherever it is called. Core placements:

* ``multiprocessing.Pool(initializer=forkguard.install)``: installed in each worker, *after* the
  fork, around an engine the parent used "at import" (every socket driver) and around a
  ``Session`` the parent left inside a transaction. The workers must get sessions of their own,
  the parent's connection must survive them, and a worker's ``stats()`` must show what it
  neutralized. The twin, without the initializer, shows the sharing.
* ``forkguard.install()`` before Django is imported, then ``os.fork()``: the child's
  ``connection.close()`` must not end the parent's session. Twin: without it, it does.

Each scenario runs in a fresh interpreter (tests/integrations/apps/fg_placement_*.py), so the
parent never installed forkguard and never had a fork hook, as in a real app.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import SOCKET_DRIVERS

ROOT = Path(__file__).resolve().parent.parent


def run_app(module: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", f"tests.integrations.apps.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr[-5000:]
    return result


# ---- multiprocessing.Pool(initializer=forkguard.install) ---------------------------------------

POOL_DRIVERS = [d for d in ("pymysql", "mysqlclient", "psycopg2", "psycopg") if d in SOCKET_DRIVERS]
SESSION_DRIVERS = ["pymysql", "psycopg2"]


def _pool(driver: str, target: str, guard: str) -> dict[str, Any]:
    return run_app("fg_placement_pool", driver, target, guard)


def _assert_workers_protected(out: dict[str, Any], *, late: bool = True) -> None:
    summary = {k: v for k, v in out.items() if k != "replies"}
    assert not out["errors"], summary
    replies = out["replies"]
    assert len(replies) == 6, summary
    parent = out["parent_session"]
    by_pid: dict[int, set[Any]] = {}
    for reply in replies:
        assert reply["pid"] != out["parent_pid"]
        # A session of the worker's own: never the parent's.
        assert reply["session"] != parent, (reply, summary)
        by_pid.setdefault(reply["pid"], set()).add(reply["session"])
        stats = reply["stats"]
        assert stats["forks_seen"] >= 1, reply
        assert stats["connections_neutralized"] >= 1, reply
        if late:  # install() after the fork: counted, and a WARNING to move it before the fork
            assert stats.get("late_installs", 0) >= 1, reply
            warnings = [r for r in reply["log"] if r["level"] == "WARNING"]
            assert any("fork" in r["message"].lower() for r in warnings), reply["log"]
    # Two workers never share a session either.
    sessions = [s for group in by_pid.values() for s in group]
    assert len(sessions) == len(set(sessions)), by_pid
    # The workers' exits did not end the parent's session; it is still the same one.
    assert out["parent_error"] is None, summary
    assert out["parent_session_after"] == parent, summary
    # Installing in the workers left the parent alone.
    assert out["parent_installed"] is not late, summary


def _assert_workers_share(out: dict[str, Any]) -> None:
    summary = {k: v for k, v in out.items() if k != "replies"}
    shared = [r for r in out["replies"] if r["session"] == out["parent_session"]]
    print(len(out["replies"]), len(shared), out["errors"][:2], out["parent_error"])
    # Shared (a worker answered with the parent's session id), or broken by the sharing (a task
    # failed, or the parent's connection did). After a failure SQLAlchemy may replace the
    # connection, so later replies can carry a fresh session.
    assert shared or out["errors"] or out["parent_error"], summary


@pytest.mark.parametrize("driver", POOL_DRIVERS)
def test_pool_initializer_install_protects_an_engine_used_before_the_pool(driver: str) -> None:
    _assert_workers_protected(_pool(driver, "engine", "install"))


@pytest.mark.parametrize("driver", ["pymysql", "psycopg2"])
@pytest.mark.parametrize("target", ["engine", "session"])
def test_pool_control_install_in_the_parent_before_the_pool(driver: str, target: str) -> None:
    """The placement that always worked, through the same harness: what the rest must match."""
    out = _pool(driver, target, "parent")
    _assert_workers_protected(out, late=False)
    if target == "session":
        assert all(r["stats"]["sessions_reset"] >= 1 for r in out["replies"]), out


@pytest.mark.parametrize("driver", POOL_DRIVERS)
def test_pool_without_initializer_workers_share_the_parents_session(driver: str) -> None:
    _assert_workers_share(_pool(driver, "engine", "none"))


@pytest.mark.parametrize("driver", SESSION_DRIVERS)
def test_pool_initializer_install_resets_an_inherited_session_in_a_transaction(
    driver: str,
) -> None:
    out = _pool(driver, "session", "install")
    _assert_workers_protected(out)
    for reply in out["replies"]:
        assert reply["stats"]["sessions_reset"] >= 1, reply


@pytest.mark.parametrize("driver", SESSION_DRIVERS)
def test_pool_without_initializer_an_inherited_session_uses_the_parents_connection(
    driver: str,
) -> None:
    _assert_workers_share(_pool(driver, "session", "none"))


# ---- install() before Django is imported --------------------------------------------------------

DJANGO_VENDORS = ("mysql", "postgresql")


def _assert_django_protected(out: dict[str, Any]) -> None:
    child = out["child"]
    assert child["ok"], child
    seen = child["value"]
    assert seen["had_connection"] is False, out  # dropped, without IO, before the child ran
    assert seen["session"] != out["parent_session"], out
    assert seen["stats"]["connections_neutralized"] >= 1, out
    # The child's query and connection.close() left the parent's session alone.
    assert out["parent_error"] is None, out
    assert out["parent_session_after"] == out["parent_session"], out


@pytest.mark.parametrize("vendor", DJANGO_VENDORS)
def test_install_before_django_is_imported_guards_djangos_connection(vendor: str) -> None:
    pytest.importorskip("django")
    out = run_app("fg_placement_django", vendor, "install")
    assert out["django_before_install"] is False
    _assert_django_protected(out)


def test_django_control_install_after_django_is_set_up() -> None:
    """The placement that always worked, through the same harness."""
    pytest.importorskip("django")
    _assert_django_protected(run_app("fg_placement_django", "postgresql", "after"))


@pytest.mark.parametrize("vendor", DJANGO_VENDORS)
def test_without_install_the_childs_close_ends_the_parents_django_session(vendor: str) -> None:
    pytest.importorskip("django")
    out = run_app("fg_placement_django", vendor, "none")
    assert out["child"]["ok"], out
    assert out["child"]["value"]["session"] == out["parent_session"]  # one shared socket
    assert out["parent_error"] is not None, out
