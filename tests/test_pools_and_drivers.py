"""Every pool class, sqlite3, SQLAlchemy's asyncio pool, and a driver forkguard does not know."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

import forkguard
from forkguard import _neutralize

from .conftest import SA_2, URLS, session_id_sql
from .forking import run_in_child


@pytest.mark.parametrize(
    "poolclass", [sa.pool.QueuePool, sa.pool.StaticPool, sa.pool.SingletonThreadPool]
)
@pytest.mark.parametrize("guarded", [True, False], ids=["forkguard", "unprotected"])
def test_pool_classes(make_engine, poolclass, guarded):
    if guarded:
        forkguard.install()
    url = URLS["pymysql"]
    sql = session_id_sql(url)
    engine = make_engine(url, poolclass=poolclass)
    with engine.connect() as conn:
        parent_session = conn.execute(sa.text(sql)).scalar()

    def child() -> Any:
        with engine.connect() as conn:
            own = conn.execute(sa.text(sql)).scalar()
        engine.dispose()
        return own

    result = run_in_child(child)
    assert result["ok"], result
    if guarded:
        assert result["value"] != parent_session
        with engine.connect() as conn:
            assert conn.execute(sa.text(sql)).scalar() == parent_session
    else:
        assert result["value"] == parent_session
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text(sql))


def test_nullpool_connection_checked_out_at_fork(make_engine):
    forkguard.install()
    url = URLS["psycopg2"]
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    held = engine.connect()
    parent_session = held.execute(sa.text(session_id_sql(url))).scalar()

    def child() -> Any:
        with engine.connect() as conn:
            own = conn.execute(sa.text(session_id_sql(url))).scalar()
        held.close()
        gc.collect()
        return own

    result = run_in_child(child)
    assert result["ok"], result
    assert result["value"] != parent_session
    assert held.execute(sa.text(session_id_sql(url))).scalar() == parent_session
    held.close()


@pytest.mark.skipif(not SA_2, reason="psycopg 3's asyncio dialect needs SQLAlchemy 2")
def test_async_adapted_queue_pool(make_engine):
    from sqlalchemy.ext.asyncio import create_async_engine

    forkguard.install()
    engine = create_async_engine("postgresql+psycopg_async://root@127.0.0.1:5432/test")
    assert isinstance(engine.sync_engine.pool, sa.pool.AsyncAdaptedQueuePool)

    async def backend_pid() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())

    loop = asyncio.new_event_loop()
    try:
        parent_session = loop.run_until_complete(backend_pid())

        def child() -> int:
            child_loop = asyncio.new_event_loop()
            own = child_loop.run_until_complete(backend_pid())
            child_loop.run_until_complete(engine.dispose())
            gc.collect()
            return own

        result = run_in_child(child)
        assert result["ok"], result
        assert result["value"] != parent_session
        assert loop.run_until_complete(backend_pid()) == parent_session
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


class RecordingSQLite(sqlite3.Connection):
    """Writes every close() to a log file with the pid, so the test can see who closed what."""

    log_path = ""

    def close(self) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"{id(self)}\n")
        super().close()


def test_sqlite_inherited_connection_is_never_closed_in_the_child(make_engine, tmp_path):
    forkguard.install()
    RecordingSQLite.log_path = str(tmp_path / "closes.log")
    db = tmp_path / "app.db"

    def creator() -> sqlite3.Connection:
        return sqlite3.connect(str(db), factory=RecordingSQLite, check_same_thread=False)

    engine = make_engine("sqlite://", creator=creator)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    with engine.connect() as conn:
        inherited_id = id(conn.connection.dbapi_connection)

    def child() -> dict[str, Any]:
        with engine.connect() as conn:
            own_id = id(conn.connection.dbapi_connection)
            rows = conn.execute(sa.text("SELECT x FROM t")).scalars().all()
        engine.dispose()
        gc.collect()
        log = tmp_path / "closes.log"
        closed = log.read_text().split() if log.exists() else []
        return {
            "own": own_id,
            "rows": rows,
            "closed": closed,
            "kept": _neutralize.kept_alive_count(),
        }

    result = run_in_child(child)
    assert result["ok"], result
    value = result["value"]
    assert value["own"] != inherited_id
    assert value["rows"] == [1]
    assert str(inherited_id) not in value["closed"]  # the child closed only its own connection
    assert str(value["own"]) in value["closed"]
    assert value["kept"] >= 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1


class UnknownDriverConnection:
    """A DB-API connection from a driver forkguard has no adapter for (wraps PyMySQL)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("guarded", [True, False], ids=["forkguard", "unprotected"])
def test_unknown_driver_socket_is_found_by_its_peer(make_engine, guarded):
    import pymysql

    if guarded:
        forkguard.install()

    def creator() -> UnknownDriverConnection:
        return UnknownDriverConnection(
            pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
        )

    engine = make_engine("mysql+pymysql://root@127.0.0.1:3306/test", creator=creator)
    with engine.connect() as conn:
        parent_session = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()

    def child() -> None:
        engine.dispose()
        gc.collect()

    assert run_in_child(child)["ok"]
    if guarded:
        from forkguard import _registry

        [state] = [s for s in _registry.all_tracked() if s.driver == "tests"]
        assert len(state.fds) == 1
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar() == parent_session
    else:
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
