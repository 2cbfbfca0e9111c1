"""Issue 7, case 7: bad input gives a clear error or a documented, tested behaviour, and never
crashes the process (a worker, or a forked child) that meets it.

In-process cases fork with ``tests.forking`` (a real ``os.fork``) against the suite's private
MariaDB; the invalid-environment case also runs under real gunicorn and uWSGI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import forkguard
from forkguard_lab.harness.servers import DBServer

from ..forking import run_in_child
from ._harness import Row, app_server, create_database
from .conftest import Recorder

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _row(results: Recorder, case: str, behaviour: str, t0: float, server: str = "os.fork") -> None:
    results.add(
        Row(
            case=f"7 bad input: {case}",
            server=server,
            db="MariaDB / PyMySQL",
            config="install()",
            load="-",
            faults=case,
            survived=behaviour,
            seconds=round(time.monotonic() - t0, 1),
        )
    )


@pytest.fixture
def engine(mariadb: DBServer) -> Any:
    dbname = create_database(mariadb)
    eng = sa.create_engine(mariadb.url("pymysql", dbname))
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(50))"))
    yield eng
    eng.dispose()


# --- invalid environment values ---------------------------------------------------------------


BAD_ENV = [
    ("FORKGUARD_MODE", "sometimes", "use one of: repair, warn, strict"),
    ("FORKGUARD_TRACE", "maybe", "use 1/0, true/false, yes/no or on/off"),
    ("FORKGUARD_FREEZE_GC", "2", "use 1/0, true/false, yes/no or on/off"),
    ("FORKGUARD_RESILIENT", "maybe", "use 1/0, true/false, yes/no or on/off"),
]


@pytest.mark.parametrize(("var", "value", "hint"), BAD_ENV, ids=[v for v, _, _ in BAD_ENV])
def test_invalid_env_value_is_a_clear_error_before_anything_is_hooked(
    var: str, value: str, hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(forkguard.ConfigurationError) as info:
        forkguard.install()
    assert f"{var}={value!r}" in str(info.value) and hint in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not forkguard.is_installed()


def test_invalid_argument_is_a_clear_error() -> None:
    with pytest.raises(forkguard.ConfigurationError, match="is not a valid mode"):
        forkguard.install(mode="sometimes")
    with pytest.raises(forkguard.ConfigurationError, match="is not a valid flag"):
        forkguard.install(trace="perhaps")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_invalid_env_under_a_server_stops_it_at_import_with_the_message(
    kind: str, mariadb: DBServer, tmp_path: Path, results: Recorder
) -> None:
    """The master imports the app, ``install()`` raises, the server refuses to start: no worker
    is ever forked with a half-configured forkguard, and the log names the bad value."""
    t0 = time.monotonic()
    url = mariadb.url("pymysql", create_database(mariadb))
    with app_server(kind, url, str(tmp_path), extra_env={"FORKGUARD_MODE": "sometimes"},
                    start=False) as srv:  # fmt: skip
        with pytest.raises(RuntimeError):
            srv.start(timeout=20)
        log_text = srv.read_log()
        workers = srv.worker_pids()
    assert "FORKGUARD_MODE='sometimes' is not a valid mode" in log_text
    assert "ConfigurationError" in log_text
    assert not workers
    _row(results, "FORKGUARD_MODE=sometimes",
         "server refuses to start; log names the value and the allowed ones", t0, kind)  # fmt: skip


# --- a driver forkguard does not know ----------------------------------------------------------


class UnknownDriverConnection:
    """A DB-API connection forkguard has no adapter for (it delegates to PyMySQL)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_unknown_driver_child_works_and_parent_survives(
    mariadb: DBServer, results: Recorder
) -> None:
    """Documented: the socket of an unknown driver is found by its peer (the newest socket to
    the server's port) and neutralized like any other."""
    t0 = time.monotonic()
    forkguard.install()
    dbname = create_database(mariadb)

    def creator() -> UnknownDriverConnection:
        return UnknownDriverConnection(
            pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", database=dbname)
        )

    eng = sa.create_engine(mariadb.url("pymysql", dbname), creator=creator)
    try:
        with eng.connect() as conn:
            parent_id = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()

        def child() -> int:
            with eng.connect() as conn:
                own = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
            eng.dispose()
            import gc

            gc.collect()
            return int(own or 0)

        out = run_in_child(child)
        assert out["ok"], out
        assert out["value"] != parent_id
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar() == parent_id
    finally:
        eng.dispose()
    _row(results, "unknown driver (wrapper class)",
         "child opens its own session; parent's session survives", t0)  # fmt: skip


# --- install() twice --------------------------------------------------------------------------


def test_install_twice_is_idempotent_and_applies_new_arguments(
    engine: sa.engine.Engine, results: Recorder
) -> None:
    t0 = time.monotonic()
    forkguard.install()
    forkguard.install()
    assert forkguard.is_installed()
    with engine.connect() as conn:
        parent_id = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()

    def child() -> dict[str, int]:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return forkguard.stats()

    out = run_in_child(child)
    assert out["ok"], out
    assert out["value"]["forks_seen"] == 1, "the fork was handled more than once"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar() == parent_id

    # A later call with arguments changes the settings (still one set of hooks).
    forkguard.install(mode="strict")
    held = engine.connect()
    held.execute(sa.text("SELECT 1"))

    def strict_child() -> str:
        try:
            held.execute(sa.text("SELECT 1"))
        except Exception as exc:
            inner = getattr(exc, "orig", None) or exc
            if isinstance(inner, forkguard.InheritedConnectionError):
                return "InheritedConnectionError"
            return type(inner).__name__
        return "no error"

    out = run_in_child(strict_child)
    held.close()
    assert out["ok"], out
    assert out["value"] == "InheritedConnectionError"
    _row(results, "install() twice",
         "idempotent: one fork handling; later arguments (mode=strict) apply", t0)  # fmt: skip


# --- protect() on a non-engine ----------------------------------------------------------------


@pytest.mark.parametrize(
    "thing",
    [None, "mysql+pymysql://root@127.0.0.1/test", 42, Session(), object()],
    ids=["None", "url-string", "int", "Session", "object"],
)
def test_protect_rejects_a_non_engine(thing: Any) -> None:
    with pytest.raises(TypeError, match="takes a SQLAlchemy Engine or AsyncEngine, not"):
        forkguard.protect(thing)


def test_protect_and_track_errors_are_recorded(results: Recorder) -> None:
    t0 = time.monotonic()
    with pytest.raises(TypeError, match="takes a DB-API connection"):
        forkguard.track(None)
    with pytest.raises(TypeError):
        forkguard.protect(sa.create_engine)
    _row(results, "protect()/track() on a non-engine",
         "TypeError naming what it takes and what it got", t0)  # fmt: skip


# --- a fork while the parent has a transaction open --------------------------------------------


def test_fork_with_open_core_transaction(engine: sa.engine.Engine, results: Recorder) -> None:
    """Documented limit: the inherited Connection raises InheritedConnectionError in the child
    (in repair mode a DisconnectionError); the child's new connections work; the parent's
    transaction commits normally."""
    t0 = time.monotonic()
    forkguard.install()
    conn = engine.connect()
    trans = conn.begin()
    conn.execute(sa.text("INSERT INTO t VALUES (1, 'parent')"))
    parent_id = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()

    def child() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        try:
            conn.execute(sa.text("SELECT 1"))
            seen["inherited"] = "no error"
        except Exception as exc:
            inner = getattr(exc, "orig", None) or exc
            seen["inherited"] = type(inner).__name__
            seen["is_inherited_error"] = isinstance(inner, forkguard.InheritedConnectionError)
            seen["is_disconnect"] = isinstance(inner, sa.exc.DisconnectionError)
        with engine.begin() as own:
            seen["rows"] = own.execute(sa.text("SELECT COUNT(*) FROM t")).scalar()
            own.execute(sa.text("INSERT INTO t VALUES (2, 'child')"))
        return seen

    out = run_in_child(child)
    assert out["ok"], out
    assert out["value"]["is_inherited_error"] is True, out["value"]
    assert out["value"]["is_disconnect"] is True
    assert out["value"]["rows"] == 0, "the child saw the parent's uncommitted row"
    assert conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar() == parent_id
    trans.commit()
    conn.close()
    with engine.connect() as check:
        rows: dict[int, str] = dict(check.execute(sa.text("SELECT id, v FROM t")).all())
    assert rows == {1: "parent", 2: "child"}
    _row(results, "fork with an open Core transaction",
         "child: InheritedConnectionError on the held Connection, new ones work; "
         "parent commits", t0)  # fmt: skip


def test_fork_with_open_orm_session_transaction(
    engine: sa.engine.Engine, results: Recorder
) -> None:
    """A Session inside a transaction at fork is reset in the child (its next use opens the
    child's own connection, with no error); the parent's commit keeps its row."""
    t0 = time.monotonic()
    forkguard.install()
    session = Session(engine)
    session.execute(sa.text("INSERT INTO t VALUES (10, 'parent')"))

    def child() -> dict[str, Any]:
        rows = session.execute(sa.text("SELECT COUNT(*) FROM t")).scalar()
        session.execute(sa.text("INSERT INTO t VALUES (11, 'child')"))
        session.commit()
        session.close()
        return {"rows": rows}

    out = run_in_child(child)
    assert out["ok"], out
    assert out["value"]["rows"] == 0
    session.commit()
    session.close()
    with engine.connect() as check:
        rows: dict[int, str] = dict(check.execute(sa.text("SELECT id, v FROM t")).all())
    assert rows == {10: "parent", 11: "child"}
    _row(results, "fork with an open ORM session transaction",
         "child's session is reset to its own connection; parent commits", t0)  # fmt: skip
