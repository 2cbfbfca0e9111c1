"""resilient=True: connections the server dropped while idle are replaced on checkout.

The server side is real: each test connection sets a 1-2 second idle timeout on its own
session (``wait_timeout`` / ``idle_session_timeout``), so the shared servers stay untouched.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

import forkguard

from .conftest import SA_2, URLS
from .forking import run_in_child

IDLE_SQL = {
    "mysql": "SET SESSION wait_timeout = 1",
    "postgresql": "SET idle_session_timeout = '1s'",
}


def _engine_with_idle_timeout(make_engine, url: str) -> sa.engine.Engine:
    engine = make_engine(url)
    statement = IDLE_SQL[engine.url.get_backend_name()]

    @sa.event.listens_for(engine, "connect")
    def short_idle(dbapi_connection, record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        if engine.url.get_backend_name() == "postgresql":
            dbapi_connection.commit()

    return engine


DRIVERS = ["pymysql", "psycopg" if SA_2 else "psycopg2"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_idle_expiry_without_resilient_fails(make_engine, driver):
    forkguard.install()
    engine = _engine_with_idle_timeout(make_engine, URLS[driver])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    time.sleep(2.5)
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_idle_expiry_with_resilient_is_invisible(make_engine, driver):
    forkguard.install(resilient=True)
    engine = _engine_with_idle_timeout(make_engine, URLS[driver])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    def child() -> int:  # a worker that idles past the timeout, then serves
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        time.sleep(2.5)
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT 1")).scalar_one())

    waiter = run_in_child(child)
    assert waiter["ok"], waiter
    time.sleep(0.5)  # the parent idled just as long
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_resilient_is_off_by_default_and_an_explicit_choice(make_engine):
    forkguard.install()
    engine = make_engine(URLS["pymysql"])
    with engine.connect():
        pass
    assert engine.pool._pre_ping is False
    forkguard.install(resilient=True)  # turning it on later reaches existing engines
    assert engine.pool._pre_ping is True
    engine.dispose()
    assert engine.pool._pre_ping is True
