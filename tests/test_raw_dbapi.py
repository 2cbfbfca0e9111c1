"""Raw DB-API connections: ``track()`` and ``Guarded``, incl. a multiprocessing.Pool."""

from __future__ import annotations

import gc
import multiprocessing
import os
from typing import Any, Callable

import psycopg2
import pymysql
import pytest

import forkguard

from .forking import run_in_child

CONNECT: dict[str, Callable[[], Any]] = {
    "pymysql": lambda: pymysql.connect(host="127.0.0.1", user="root", database="test"),
    "psycopg2": lambda: psycopg2.connect(host="127.0.0.1", user="root", dbname="test"),
}
SESSION_SQL = {"pymysql": "SELECT CONNECTION_ID()", "psycopg2": "SELECT pg_backend_pid()"}


def _session_of(conn: Any, driver: str) -> int:
    with conn.cursor() as cur:
        cur.execute(SESSION_SQL[driver])
        return int(cur.fetchone()[0])


@pytest.mark.parametrize("driver", CONNECT)
@pytest.mark.parametrize("guarded", [True, False], ids=["tracked", "unprotected"])
def test_track_keeps_the_parents_connection(driver, guarded):
    conn = CONNECT[driver]()
    if guarded:
        forkguard.track(conn)
    before = _session_of(conn, driver)

    def child() -> None:
        conn.close()  # unprotected: COM_QUIT / Terminate over the parent's socket
        gc.collect()

    assert run_in_child(child)["ok"]
    if guarded:
        assert _session_of(conn, driver) == before
        conn.close()
    else:
        with pytest.raises((pymysql.err.OperationalError, psycopg2.OperationalError)):
            _session_of(conn, driver)


def test_track_refuses_what_is_not_a_connection():
    with pytest.raises(TypeError, match="takes a DB-API connection"):
        forkguard.track(42)


@pytest.mark.parametrize("driver", CONNECT)
def test_guarded_gives_each_process_its_own_connection(driver):
    db = forkguard.Guarded(CONNECT[driver])
    parent_session = _session_of(db(), driver)

    def child() -> int:
        own = _session_of(db(), driver)
        db.close()
        return own

    result = run_in_child(child, "ctypes")
    assert result["ok"], result
    assert result["value"] != parent_session
    assert _session_of(db.get(), driver) == parent_session
    with db.cursor() as cur:  # attribute access is forwarded to this process's connection
        cur.execute("SELECT 1")
    db.close()


def test_guarded_refuses_a_non_callable():
    with pytest.raises(TypeError, match="takes a function that opens a connection"):
        forkguard.Guarded("mysql://root@127.0.0.1/test")  # type: ignore[arg-type]


# multiprocessing.Pool with the fork start method and a module-level connection
_shared: Any = None


def _echo_task(token: str) -> tuple[str, str, int]:
    conn = _shared() if isinstance(_shared, forkguard.Guarded) else _shared
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT %s", (token,))
            return token, str(cur.fetchone()[0]), os.getpid()
    except Exception as exc:
        return token, f"error: {type(exc).__name__}", os.getpid()


def _run_pool(tasks: int) -> list[tuple[str, str, int]]:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        return pool.map(_echo_task, [f"token-{i}" for i in range(tasks)], chunksize=1)


def test_multiprocessing_pool_with_a_guarded_module_level_connection():
    global _shared
    _shared = forkguard.Guarded(CONNECT["pymysql"])
    parent_session = _session_of(_shared(), "pymysql")
    try:
        results = _run_pool(400)
        assert [r for r in results if r[0] != r[1]] == []
        assert _session_of(_shared(), "pymysql") == parent_session
    finally:
        _shared.close()
        _shared = None


def test_multiprocessing_pool_with_a_plain_module_level_connection_breaks():
    global _shared
    _shared = pymysql.connect(
        host="127.0.0.1", user="root", database="test", read_timeout=5, write_timeout=5
    )
    try:
        results = _run_pool(400)
        assert [r for r in results if r[0] != r[1]] != []  # crossed answers or errors
    finally:
        _shared = None
