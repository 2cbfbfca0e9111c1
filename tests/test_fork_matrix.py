"""Driver x fork mechanism: the child gets its own server session, the parent keeps its own.

Each scenario runs twice: with forkguard (the parent's connection must survive everything the
child does) and without it (the same child actions must break the parent), so the test proves
it can fail.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
import sqlalchemy as sa

import forkguard

from .conftest import SOCKET_DRIVERS, URLS, session_id_sql
from .forking import MECHANISMS, run_in_child


def _child_uses_closes_disposes_collects(engine: sa.engine.Engine, sql: str) -> Any:
    """Everything a worker does to an inherited engine: query, close, dispose, GC, exit."""

    def child() -> dict[str, Any]:
        with engine.connect() as conn:
            own = conn.execute(sa.text(sql)).scalar()
        engine.dispose()  # the reported app's post-fork "fix": closes what the pool holds
        gc.collect()
        return {"own": own, "stats": forkguard.stats()}

    return child


def _engine_holding_a_connection(make_engine, driver: str) -> tuple[sa.engine.Engine, str, Any]:
    """An engine whose pool holds one idle connection at fork, and that connection's session id."""
    url = URLS[driver]
    sql = session_id_sql(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        return engine, sql, conn.execute(sa.text(sql)).scalar()


def _parent_session(engine: sa.engine.Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("driver", SOCKET_DRIVERS)
def test_child_gets_own_session_and_parent_survives(make_engine, driver, mechanism):
    forkguard.install()
    engine, sql, parent_session = _engine_holding_a_connection(make_engine, driver)

    result = run_in_child(_child_uses_closes_disposes_collects(engine, sql), mechanism)

    assert result["ok"], result
    assert result["value"]["own"] != parent_session
    stats = result["value"]["stats"]
    assert stats["forks_seen"] == 1
    assert stats["connections_neutralized"] == 1
    assert _parent_session(engine, sql) == parent_session  # the very same connection answers


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("driver", SOCKET_DRIVERS)
def test_without_forkguard_the_child_breaks_the_parent(make_engine, driver, mechanism):
    engine, sql, parent_session = _engine_holding_a_connection(make_engine, driver)

    result = run_in_child(_child_uses_closes_disposes_collects(engine, sql), mechanism)

    assert result["ok"], result
    # Unprotected, the child's first checkout reuses the parent's very server session ...
    assert result["value"]["own"] == parent_session
    # ... and its dispose() closed it for the parent too.
    with pytest.raises(sa.exc.OperationalError):
        _parent_session(engine, sql)


@pytest.mark.parametrize("guarded", [True, False], ids=["forkguard", "unprotected"])
def test_mysqlclient_gc_of_disposed_pool_in_child(make_engine, guarded):
    """SQLAlchemy's documented fix, dispose(close=False), is not enough for mysqlclient:
    freeing the old pool in the child runs mysql_close(), which sends COM_QUIT."""
    if guarded:
        forkguard.install()
    engine, sql, parent_session = _engine_holding_a_connection(make_engine, "mysqlclient")

    def child() -> None:
        engine.dispose(close=False)
        gc.collect()

    assert run_in_child(child, "os")["ok"]
    if guarded:
        assert _parent_session(engine, sql) == parent_session
    else:
        with pytest.raises(sa.exc.OperationalError):
            _parent_session(engine, sql)


@pytest.mark.parametrize("mechanism", ["os", "ctypes"])
def test_fork_is_noticed_without_madv_wipeonfork(make_engine, monkeypatch, mechanism):
    """Kernels before 4.14 (and non-Linux) get the getpid() compare instead of the marker page."""
    from forkguard import _fork

    monkeypatch.setattr(_fork, "_marker", None)
    forkguard.install()
    engine, sql, parent_session = _engine_holding_a_connection(make_engine, "pymysql")
    result = run_in_child(_child_uses_closes_disposes_collects(engine, sql), mechanism)
    assert result["ok"], result
    assert result["value"]["own"] != parent_session
    assert _parent_session(engine, sql) == parent_session


def test_the_marker_page_is_wiped_in_children():
    from forkguard import _fork

    if _fork._marker is None:
        pytest.skip("MADV_WIPEONFORK is not available on this kernel")
    assert _fork._marker[0] == 1
    # A fork from C runs no hook at all, so nothing re-marks the page before the child looks.
    assert run_in_child(lambda: _fork._marker[0], "ctypes")["value"] == 0
