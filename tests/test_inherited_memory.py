"""Issue 18.2: a child never frees the connections it inherited, so their pages stay shared.

Freeing an inherited DB-API connection in a worker writes to every page it occupies - the
driver object, its buffers and, for PyMySQL (TLS preferred since 1.1), an ``SSLContext`` with
the CA store - and so copies them: 1.5 MB of private memory per worker for the memory
benchmark app's one PyMySQL connection. SQLAlchemy's own recipe
(``engine.dispose(close=False)``) leaves them allocated. These tests pin that forkguard does too:
the child keeps each inherited connection it takes out of a pool or session, dead (its socket
is /dev/null) and no longer tracked; and what a process keeps is bounded by the connections its
ancestors held when they forked, however many times it forks.
"""

from __future__ import annotations

import gc
import os
import stat
import weakref
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import forkguard
from forkguard import _drivers, _neutralize, _registry

from .conftest import URLS, session_id_sql
from .forking import run_in_child


def _is_devnull(fd: int | None) -> bool:
    if fd is None:
        return False
    st, null = os.fstat(fd), os.stat(os.devnull)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


@pytest.mark.parametrize("driver", ["pymysql", "psycopg2"])
def test_inherited_connections_stay_allocated_dead_and_untracked(make_engine, driver):
    forkguard.install()
    url = URLS[driver]
    engine = make_engine(url, pool_size=2)
    idle = engine.connect()  # one connection checked in to the pool at the fork ...
    idle.execute(sa.text("SELECT 1"))
    pooled = idle.connection.dbapi_connection
    session = Session(engine)  # ... and one held by a session inside a transaction
    parent_id = session.execute(sa.text(session_id_sql(url))).scalar()
    held = session.connection().connection.dbapi_connection
    idle.close()
    assert pooled is not held
    refs = [weakref.ref(pooled), weakref.ref(held)]
    del pooled, held

    def child() -> dict[str, Any]:
        gc.collect()
        alive = [ref() for ref in refs]
        kept = [conn for conn in alive if conn is not None]
        return {
            "alive": [conn is not None for conn in alive],
            "dead": [_is_devnull(_drivers.socket_fd(conn)) for conn in kept],
            "tracked": [_registry.lookup(conn) is not None for conn in kept],
            "own_session": session.execute(sa.text(session_id_sql(url))).scalar(),
            "stats": forkguard.stats(),
        }

    result = run_in_child(child)
    assert result["ok"], result
    value = result["value"]
    assert value["alive"] == [True, True]  # never freed in the child: its pages stay shared
    assert value["dead"] == [True, True]
    assert value["tracked"] == [False, False]  # let go of, as if freed
    assert value["own_session"] != parent_id
    assert value["stats"]["connections_neutralized"] == 2
    # The parent's connections were neither closed nor used by the child.
    assert session.execute(sa.text(session_id_sql(url))).scalar() == parent_id
    session.close()


def test_what_a_process_keeps_is_bounded_by_what_its_ancestors_held(make_engine):
    forkguard.install()
    url = URLS["pymysql"]
    engine = make_engine(url)
    session = Session(engine)
    session.execute(sa.text("SELECT 1"))  # the parent's one connection, in a transaction

    def grandchild() -> int:
        return _neutralize.kept_alive_count()

    def child() -> dict[str, Any]:
        inherited = _neutralize.kept_alive_count()
        session.execute(sa.text("SELECT 1"))  # the child's own connection, held at its forks
        grandchildren = [run_in_child(grandchild) for _ in range(3)]
        return {
            "inherited": inherited,
            "grandchildren": [r.get("value") for r in grandchildren],
            "after": _neutralize.kept_alive_count(),
        }

    result = run_in_child(child)
    assert result["ok"], result
    value = result["value"]
    assert value["inherited"] == 1
    # Each grandchild keeps its grandparent's connection and its parent's; forking again and
    # again adds nothing to the parent.
    assert value["grandchildren"] == [2, 2, 2]
    assert value["after"] == 1
    session.close()
