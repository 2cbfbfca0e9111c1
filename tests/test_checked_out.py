"""Connections and sessions that are *in use* at the moment of the fork.

These are the cases every known workaround gets wrong: SQLAlchemy finalizes a checked-out
connection with a rollback, which (unprotected) travels over the parent's socket and silently
undoes the parent's open transaction.
"""

from __future__ import annotations

import gc

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import close_all_sessions, scoped_session, sessionmaker

import forkguard

from .conftest import SOCKET_DRIVERS, URLS, inherited_error, session_id_sql
from .forking import run_in_child


def _make_table(engine: sa.engine.Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER)"))


def _ids(engine: sa.engine.Engine, name: str) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT id FROM {name} ORDER BY id")).scalars())


@pytest.mark.parametrize("driver", SOCKET_DRIVERS)
def test_checked_out_connection_at_fork(make_engine, table_name, drop_tables, driver):
    forkguard.install()
    url = URLS[driver]
    engine = make_engine(url)
    _make_table(engine, table_name)
    drop_tables.append((url, table_name))
    held = engine.connect()
    transaction = held.begin()
    parent_session = held.execute(sa.text(session_id_sql(url))).scalar()
    held.execute(sa.text(f"INSERT INTO {table_name} VALUES (1)"))

    def child() -> dict[str, object]:
        with engine.connect() as conn:
            own = conn.execute(sa.text(session_id_sql(url))).scalar()
        try:
            held.execute(sa.text("SELECT 1"))
            use_of_inherited = "no error"
        except Exception as exc:
            use_of_inherited = str(inherited_error(exc))
        held.close()  # unprotected, this rollback would undo the parent's INSERT
        gc.collect()
        return {"own": own, "inherited": use_of_inherited}

    result = run_in_child(child)
    assert result["ok"], result
    assert result["value"]["own"] != parent_session
    assert "inherited through fork()" in result["value"]["inherited"]
    assert held.execute(sa.text(session_id_sql(url))).scalar() == parent_session
    transaction.commit()
    held.close()
    assert _ids(engine, table_name) == [1]


def test_unprotected_child_rollback_silently_loses_the_parents_write(
    make_engine, table_name, drop_tables
):
    url = URLS["pymysql"]
    engine = make_engine(url)
    _make_table(engine, table_name)
    drop_tables.append((url, table_name))
    held = engine.connect()
    transaction = held.begin()
    held.execute(sa.text(f"INSERT INTO {table_name} VALUES (1)"))

    def child() -> None:
        transaction.rollback()  # what reset-on-return does when the child drops the connection

    assert run_in_child(child)["ok"]
    transaction.commit()  # returns OK ...
    held.close()
    assert _ids(engine, table_name) == []  # ... and the row is gone


@pytest.mark.parametrize("mechanism", ["os", "ctypes"])
@pytest.mark.parametrize("driver", SOCKET_DRIVERS)
def test_scoped_session_in_transaction_at_fork(
    make_engine, table_name, drop_tables, driver, mechanism
):
    """Flask-SQLAlchemy 2 style: a scoped session keeps its connection checked out.

    A libc fork runs no hook: the child's first ``Session.execute()`` is the first place that
    can notice, and only with the opt-in per-statement check.
    """
    forkguard.install(orm_fork_check=mechanism == "ctypes")
    url = URLS[driver]
    engine = make_engine(url)
    _make_table(engine, table_name)
    drop_tables.append((url, table_name))
    Session = scoped_session(sessionmaker(bind=engine, expire_on_commit=False))
    parent_session = Session.execute(sa.text(session_id_sql(url))).scalar()
    Session.execute(sa.text(f"INSERT INTO {table_name} VALUES (1)"))

    def child() -> dict[str, object]:
        own = Session.execute(sa.text(session_id_sql(url))).scalar()  # no error surfaces
        Session.execute(sa.text(f"INSERT INTO {table_name} VALUES (2)"))
        Session.commit()
        Session.remove()
        gc.collect()
        return {"own": own, "stats": forkguard.stats()}

    result = run_in_child(child, mechanism)
    assert result["ok"], result
    assert result["value"]["own"] != parent_session
    assert result["value"]["stats"]["sessions_reset"] == 1
    assert Session.execute(sa.text(session_id_sql(url))).scalar() == parent_session
    Session.commit()
    Session.remove()
    assert _ids(engine, table_name) == [1, 2]


@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
def test_the_users_postfork_fixes_become_harmless(make_engine, table_name, drop_tables, driver):
    """The user's post-fork hooks, both versions, run in the child with forkguard installed."""
    forkguard.install()
    url = URLS[driver]
    engine = make_engine(url)
    _make_table(engine, table_name)
    drop_tables.append((url, table_name))
    Session = scoped_session(sessionmaker(bind=engine))
    parent_session = Session.execute(sa.text(session_id_sql(url))).scalar()

    def child() -> object:
        engine.dispose()  # the user's first @postfork fix
        close_all_sessions()  # the user's second fix: close_all + dispose + new scoped session
        engine.dispose()
        Session.remove()
        own = Session.execute(sa.text(session_id_sql(url))).scalar()
        Session.execute(sa.text(f"INSERT INTO {table_name} VALUES (2)"))
        Session.commit()
        return own

    result = run_in_child(child)
    assert result["ok"], result
    assert result["value"] != parent_session
    assert Session.execute(sa.text(session_id_sql(url))).scalar() == parent_session
    Session.commit()
    Session.remove()
    assert _ids(engine, table_name) == [2]


def test_without_the_orm_check_a_hookless_fork_reuses_the_parents_session(make_engine):
    """The twin of the ctypes case above: what ``orm_fork_check=True`` is for."""
    forkguard.install()
    url = URLS["pymysql"]
    engine = make_engine(url)
    Session = scoped_session(sessionmaker(bind=engine))
    parent_session = Session.execute(sa.text(session_id_sql(url))).scalar()

    def child() -> object:
        return Session.execute(sa.text(session_id_sql(url))).scalar()

    result = run_in_child(child, "ctypes")
    assert result["ok"], result
    assert result["value"] == parent_session  # no hook ran and nothing checked: shared socket
    Session.remove()


def test_no_per_statement_orm_listener_by_default():
    from sqlalchemy.orm import Session as OrmSession

    def forkguards(session: OrmSession) -> list[object]:
        return [
            fn
            for fn in session.dispatch.do_orm_execute
            if getattr(fn, "__module__", "").startswith("forkguard")
        ]

    forkguard.install()
    assert forkguards(OrmSession()) == []
    forkguard.install(orm_fork_check=True)
    assert len(forkguards(OrmSession())) == 1
    forkguard.install(orm_fork_check=False)
    assert forkguards(OrmSession()) == []
