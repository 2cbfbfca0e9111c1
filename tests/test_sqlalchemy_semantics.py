"""Issue 17.6 and 17.9: forkguard changes nothing SQLAlchemy's own behaviour depends on, and
the two private attributes it cannot avoid are pinned here, so an SQLAlchemy upgrade that
moves them fails this file instead of silently turning protection off."""

from __future__ import annotations

import gc
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import forkguard
from forkguard import sqlalchemy as fg_sa

from .conftest import URLS, session_id_sql
from .forking import run_in_child


def test_a_dropped_connection_goes_back_to_the_pool_by_garbage_collection():
    # SQLAlchemy's own test/engine/test_pool.py::QueuePoolTest::test_queuepool_del: finding
    # the engine must not snapshot frame locals (Python <= 3.12 keeps them alive).
    forkguard.install()
    pool = sa.pool.QueuePool(lambda: __import__("sqlite3").connect(":memory:"), pool_size=3)
    c1 = pool.connect()
    c2 = pool.connect()  # a new connection: forkguard's connect listener runs with c1 local
    assert pool.checkedout() == 2
    del c1
    gc.collect()
    assert pool.checkedout() == 1
    c2.close()
    pool.dispose()


def test_the_pool_of_a_connection_record_is_found():
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        record = conn.connection._connection_record
        assert fg_sa._pool_of(record) is engine.pool
    engine.dispose()


def test_pre_ping_turned_on_survives_a_fresh_pool():
    engine = sa.create_engine("sqlite://")
    fg_sa._turn_on_pre_ping(engine.pool)
    engine.dispose(close=False)
    assert engine.pool._pre_ping is True
    engine.dispose()


def test_an_engine_made_after_install_is_found_without_reading_frames(make_engine):
    forkguard.install()
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert engine in fg_sa._engines
    [state] = [s for s in fg_sa._registry.all_tracked() if s.url and "pymysql" in s.url]
    assert state.url == "mysql+pymysql://root@127.0.0.1:3306/test"


def test_protect_resets_the_sessions_on_the_protected_engine(make_engine):
    protected = forkguard.protect(make_engine(URLS["psycopg2"]))
    session = Session(protected)
    parent = session.execute(sa.text(session_id_sql(URLS["psycopg2"]))).scalar()

    def child() -> dict[str, Any]:
        seen = session.execute(sa.text(session_id_sql(URLS["psycopg2"]))).scalar()
        session.close()
        return {"session": seen, "stats": forkguard.stats()}

    result = run_in_child(child)
    assert result["ok"], result
    assert result["value"]["session"] != parent
    assert result["value"]["stats"]["sessions_reset"] == 1
    assert session.execute(sa.text(session_id_sql(URLS["psycopg2"]))).scalar() == parent
    session.close()
