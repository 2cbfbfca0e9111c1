"""Issue 17.1: ``install()`` protects wherever it runs - also in a child, after the fork.

The parent opened its engine (and, Flask-SQLAlchemy 2 style, kept a session inside a
transaction) *without* forkguard; the child calls ``forkguard.install()`` first thing, as a
post-fork hook would. The child must get its own session, the parent's must survive the child
closing everything and exiting, and the child must be told to move the line. Each case has a
twin: the same child without ``install()`` ends the parent's session.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import forkguard

from .conftest import SOCKET_DRIVERS, URLS, session_id_sql
from .forking import MECHANISMS, run_in_child


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _child_installs_then_closes(engine: sa.engine.Engine, *, install: bool) -> dict[str, Any]:
    """In the child: (install), query, then close everything the way an exiting worker does."""
    records = _Records()
    logging.getLogger("forkguard").addHandler(records)
    if install:
        forkguard.install()
    with engine.connect() as conn:
        session_id = conn.execute(sa.text(session_id_sql(str(engine.url)))).scalar()
    engine.dispose()  # the reported app's post-fork fix: closes every pooled connection it can see
    return {"session": session_id, "stats": forkguard.stats(), "log": records.lines}


def _parent_session(engine: sa.engine.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(session_id_sql(str(engine.url)))).scalar()


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("driver", SOCKET_DRIVERS)
def test_install_in_the_child_protects_the_parent(make_engine, driver, mechanism):
    engine = make_engine(URLS[driver])
    before = _parent_session(engine)  # a pooled connection, opened with no forkguard around

    result = run_in_child(lambda: _child_installs_then_closes(engine, install=True), mechanism)

    assert result["ok"], result
    child = result["value"]
    assert child["session"] != before
    assert child["stats"]["connections_neutralized"] == 1
    assert child["stats"]["late_installs"] == 1
    assert child["stats"]["pools_replaced"] >= 1
    [warning] = [line for line in child["log"] if line.startswith("WARNING")]
    assert "after it was forked from pid" in warning
    assert "test_late_install.py" in warning  # the line that called install()
    assert "Move it before the fork" in warning
    assert _parent_session(engine) == before


@pytest.mark.parametrize("driver", ["pymysql", "psycopg2"])
def test_twin_without_install_the_child_ends_the_parents_session(make_engine, driver):
    engine = make_engine(URLS[driver])
    before = _parent_session(engine)

    result = run_in_child(lambda: _child_installs_then_closes(engine, install=False))

    assert result["ok"], result
    assert result["value"]["session"] == before  # the child talked on the parent's session
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@pytest.mark.parametrize("driver", ["pymysql", "psycopg2"])
def test_late_install_resets_a_session_the_parent_kept_in_a_transaction(
    make_engine, table_name, drop_tables, driver
):
    url = URLS[driver]
    engine = make_engine(url)
    drop_tables.append((url, table_name))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table_name} (id INT PRIMARY KEY)"))
    session = Session(engine)  # Flask-SQLAlchemy 2 style: begun at import, never closed
    session.execute(sa.text(f"INSERT INTO {table_name} VALUES (1)"))

    def child() -> dict[str, Any]:
        forkguard.install()
        seen = session.execute(sa.text(f"SELECT COUNT(*) FROM {table_name}")).scalar()
        session.close()
        return {"seen": seen, "stats": forkguard.stats()}

    result = run_in_child(child)
    assert result["ok"], result
    assert result["value"]["seen"] == 0  # its own session: the parent's insert is not visible
    assert result["value"]["stats"]["sessions_reset"] == 1
    session.commit()  # the parent's transaction survived the child's rollback-on-close
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table_name}")).scalar() == 1
    session.close()


def test_no_warning_when_install_runs_before_the_fork(make_engine):
    forkguard.install()
    engine = make_engine(URLS["pymysql"])
    before = _parent_session(engine)

    def child() -> dict[str, Any]:
        result = _child_installs_then_closes(engine, install=True)  # a second, harmless call
        return result

    result = run_in_child(child)
    assert result["ok"], result
    assert not [line for line in result["value"]["log"] if line.startswith("WARNING")]
    assert result["value"]["stats"]["late_installs"] == 0
    assert _parent_session(engine) == before


def test_no_warning_when_a_late_install_finds_nothing_inherited():
    # gunicorn without --preload, forkguard imported by gunicorn.conf.py in the master: the
    # worker's install() comes after a fork, but the worker inherited nothing to protect.
    def child() -> dict[str, Any]:
        records = _Records()
        logging.getLogger("forkguard").addHandler(records)
        forkguard.install()
        return {"log": records.lines, "stats": forkguard.stats()}

    result = run_in_child(child)
    assert result["ok"], result
    assert not [line for line in result["value"]["log"] if line.startswith("WARNING")]
    assert result["value"]["stats"]["forks_seen"] == 1


_IMPORTED_AFTER_THE_FORK = """
import os, sys
import sqlalchemy as sa

url, install = sys.argv[1], sys.argv[2] == "1"
engine = sa.create_engine(url)
with engine.connect() as conn:  # the parent never imports forkguard
    before = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
pid = os.fork()
if pid == 0:
    if install:
        import forkguard  # first imported here: no fork marker, /proc tells what is inherited

        forkguard.install()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    os._exit(0)
os.waitpid(pid, 0)
try:
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
except sa.exc.OperationalError as exc:
    print("PARENT BROKEN", exc.orig)
    sys.exit(1)
print("PARENT OK" if after == before else "PARENT RECONNECTED")
"""


@pytest.mark.parametrize("install", [True, False], ids=["install", "twin-no-install"])
def test_install_in_a_child_that_imported_forkguard_after_the_fork(tmp_path, install):
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent(_IMPORTED_AFTER_THE_FORK))
    proc = subprocess.run(
        [sys.executable, str(script), URLS["pymysql"], "1" if install else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    if install:
        assert proc.stdout.strip() == "PARENT OK", proc.stdout + proc.stderr
        # No logging configured in that script: the warning still reaches stderr.
        assert "forkguard.install() ran in pid" in proc.stderr
        assert "late.py" in proc.stderr
    else:
        assert "PARENT BROKEN" in proc.stdout, proc.stdout + proc.stderr
