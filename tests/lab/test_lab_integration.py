"""What the lab must show, against real uWSGI/gunicorn and private DB servers.

forkguard cells are clean on every server and driver; without a fix, and with the user's first
fix (``dispose``), the reported bug shows; forkguard's workers use less memory than lazy
loading's.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow

# The lab's error kinds that only a database connection produces.
DATABASE_KINDS = {
    "2006 gone away",
    "2013 lost connection",
    "2014 out of sync",
    "packet sequence wrong",
    "pending rollback",
    "result missing",
    "wrong result shape",
    "INSERT got no id",
    "lost sync (libpq)",
    "command in progress",
}


def _cells(lab_runs: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = lab_runs[name]["doc"]["cells"]
    assert cells, f"the {name} run produced no cells"
    for cell in cells:
        assert cell["error"] is None, f"harness error in {cell}"
    return cells


def _where(cell: dict[str, Any]) -> str:
    return f"{cell['server']}/{cell['driver']}/{cell['strategy']}"


def test_forkguard_cells_are_clean_on_every_server_and_driver(
    lab_runs: dict[str, dict[str, Any]],
) -> None:
    cells = _cells(lab_runs, "forkguard")
    seen = {(c["server"], c["driver"]) for c in cells}
    assert seen == {
        (s, d)
        for s in ("uwsgi", "gunicorn")
        for d in ("pymysql", "mysqlclient", "psycopg2", "psycopg")
    }
    for cell in cells:
        where = f"{_where(cell)} (cell: {cell}; logs: {lab_runs['forkguard']['dir']}/logs)"
        assert cell["requests"] >= 50, f"{where}: too few requests to prove anything"
        assert cell["worker_pids_seen"] > 4, f"{where}: workers were never recycled"
        assert cell["http_errors"] == 0, f"{where}: {cell['status_counts']}"
        assert cell["db_errors"] == 0, f"{where}: {cell['db_error_kinds']}"
        assert cell["respawn_db_errors"] == 0, where
        assert cell["respawn_status"] != "errors", f"{where}: a respawned worker failed"
        assert cell["echo_mismatches"] == 0, where
        assert cell["read_mismatches"] == 0, where
        assert cell["lost_writes"] == 0, where
        assert cell["failed_but_committed"] == 0, where
        assert cell["acknowledged_writes"] > 0, f"{where}: no write was acknowledged"
    assert lab_runs["forkguard"]["rc"] == 0


def test_none_and_dispose_reproduce_the_reported_bug_under_uwsgi(
    lab_runs: dict[str, dict[str, Any]],
) -> None:
    cells = _cells(lab_runs, "reported_bug")
    assert {(c["driver"], c["strategy"]) for c in cells} == {
        (d, s) for d in ("pymysql", "mysqlclient") for s in ("none", "dispose")
    }
    for cell in cells:
        symptoms = cell["http_errors"] + cell["db_errors"] + cell["leaks"] + cell["lost_writes"]
        assert symptoms > 0, f"{_where(cell)} showed no error: the lab did not reproduce the bug"
        assert cell["db_errors"] > 0, f"{_where(cell)}: no DB error in the server log"


def test_through_pgbouncer_forkguard_is_clean_and_no_fix_breaks(
    lab_runs: dict[str, dict[str, Any]],
) -> None:
    """A private PgBouncer (session and transaction pooling) in front of the private
    PostgreSQL: the workers' inherited socket now leads to the pooler, and the same failures
    follow without a fix; forkguard's cells stay clean."""
    cells = _cells(lab_runs, "pooler")
    by = {(c["driver"], c["strategy"]): c for c in cells}
    for mode in ("session", "transaction"):
        ours, bare = (
            by[(f"psycopg2/pgbouncer-{mode}", "forkguard")],
            by[(f"psycopg2/pgbouncer-{mode}", "none")],
        )
        assert ours["requests"] >= 50 and ours["clean"], _where(ours) + f": {ours}"
        assert ours["worker_pids_seen"] > 4, f"{_where(ours)}: workers were never recycled"
        assert bare["http_errors"] > 0 and bare["db_errors"] > 0, f"{_where(bare)}: {bare}"
    assert lab_runs["pooler"]["rc"] == 0


def test_clients_variant_forkguard_clean_and_the_database_recipe_not_enough(
    lab_runs: dict[str, dict[str, Any]],
) -> None:
    """--clients: the app also calls an HTTPS API through a session it used at import. In the
    fsa3 style (the connection back in the pool at import) SQLAlchemy's recipe,
    dispose(close=False), fixes the database; not the HTTP client: the first workers share the
    master's TLS connection and a request fails (SSL, or a reply to another request) until the
    server drops it. forkguard's cells are clean."""
    cells = _cells(lab_runs, "clients")
    assert lab_runs["clients"]["doc"]["meta"]["clients"] is True
    by = {(c["server"], c["strategy"]): c for c in cells}
    recipe_failures = 0
    for server in ("uwsgi", "gunicorn"):
        ours, recipe = by[(server, "forkguard")], by[(server, "dispose-noclose")]
        assert ours["requests"] >= 50 and ours["clean"], _where(ours) + f": {ours}"
        database_kinds = [k for k in recipe["db_error_kinds"] if k in DATABASE_KINDS]
        assert not database_kinds, f"{_where(recipe)}: the recipe left database errors"
        recipe_failures += recipe["http_errors"]
    assert recipe_failures > 0, "the inherited HTTP connection failed no request"
    assert lab_runs["clients"]["rc"] == 0


def test_forkguard_workers_use_less_memory_than_lazy_loading(
    lab_runs: dict[str, dict[str, Any]],
) -> None:
    fg = {(c["server"], c["driver"]): c for c in _cells(lab_runs, "forkguard")}
    for lazy in _cells(lab_runs, "memory"):
        key = (lazy["server"], lazy["driver"])
        ours = fg[key]["workers_pss_kb"]
        theirs = lazy["workers_pss_kb"]
        assert ours > 0 and theirs > 0
        assert fg[key]["pss_not_measured"] == "" and lazy["pss_not_measured"] == ""
        # Read only once every worker had loaded the app: each lazy worker holds all of it
        # (the 32 MB working set at least), never a worker caught mid-import.
        assert len(lazy["workers_pss_each_kb"]) == 4, lazy
        assert min(lazy["workers_pss_each_kb"]) >= 32 * 1024, lazy["workers_pss_each_kb"]
        ratio = ours / theirs
        print(f"{key}: forkguard PSS / lazy PSS = {ratio:.2f}")
        assert ratio < 1.0, f"{key}: forkguard {ours} kB >= lazy {theirs} kB"
        assert lazy["http_errors"] == 0 and lazy["db_errors"] == 0


def test_outputs_are_written(lab_runs: dict[str, dict[str, Any]]) -> None:
    out = lab_runs["forkguard"]["dir"]
    assert (out / "lab.json").stat().st_size > 0
    assert (out / "lab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "lab.txt").read_text()
    assert "forkguard" in text and "HTTP err" in text
    for cell in lab_runs["forkguard"]["doc"]["cells"]:
        where = f"{cell['server']}/{cell['driver']}/{cell['strategy']}"
        if cell["time_capped"]:  # a short row is always marked and explained
            assert f"* {where}: {cell['requests']} of {cell['requests_asked']} requests" in text
