"""Modes (repair / warn / strict), tracing, and what bad settings say."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

import forkguard

from .conftest import MYSQL_HOST, SA_2, URLS, inherited_error
from .forking import run_in_child


def line_of(marker: str) -> int:
    """The line of this file that carries ``marker`` in code (not in this lookup)."""
    with open(__file__) as src:
        return next(i for i, line in enumerate(src, 1) if line.rstrip().endswith(marker))


@pytest.fixture
def mysql_user_with_password():
    """A throwaway account with a password, so we can check the password never shows."""
    name, password = f"fg_u_{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    admin = sa.create_engine(URLS["pymysql"], poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"))
        conn.execute(sa.text(f"GRANT SELECT ON test.* TO '{name}'@'%'"))
    yield name, password
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP USER '{name}'@'%'"))
    admin.dispose()


def test_strict_mode_names_parent_url_and_line(make_engine, mysql_user_with_password):
    name, password = mysql_user_with_password
    forkguard.install(mode="strict")
    engine = make_engine(f"mysql+pymysql://{name}:{password}@{MYSQL_HOST}/test")
    held = engine.connect()  # OPENED-HERE
    held.execute(sa.text("SELECT 1"))
    parent = os.getpid()

    def child() -> dict[str, object]:
        try:
            held.execute(sa.text("SELECT 1"))
        except Exception as raised:
            exc = inherited_error(raised)
            assert isinstance(exc, forkguard.InheritedConnectionError), raised
            return {
                "message": str(exc),
                "parent_pid": exc.parent_pid,
                "url": exc.url,
                "stats": forkguard.stats(),
            }
        return {"message": "no error"}

    result = run_in_child(child)
    assert result["ok"], result
    value = result["value"]
    assert value["parent_pid"] == parent
    assert f"pid {parent}" in value["message"]
    assert f"mysql+pymysql://{name}:***@{MYSQL_HOST}/test" in value["message"]
    assert password not in value["message"]
    assert f"{__file__}:{line_of('# OPENED-HERE')}" in value["message"]
    assert value["stats"]["strict_violations"] == 1
    held.close()


def test_strict_mode_refuses_an_idle_inherited_connection_on_checkout(make_engine):
    forkguard.install(mode="strict")
    engine = make_engine(URLS["psycopg2"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    def child() -> str:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return "no error"

    result = run_in_child(child)
    assert not result["ok"]
    assert result["error"] == "InheritedConnectionError"
    assert "inherited through fork()" in result["message"]
    with engine.connect() as conn:  # the parent is unaffected
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_repair_mode_checkout_is_silent_and_fresh(make_engine):
    forkguard.install(mode="repair")
    engine = make_engine(URLS["psycopg" if SA_2 else "psycopg2"], pool_pre_ping=True)
    with engine.connect() as conn:
        parent_session = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    def child() -> object:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    result = run_in_child(child)
    assert result["ok"], result
    assert result["value"] != parent_session


@pytest.mark.parametrize("mechanism", ["os", "ctypes"])
def test_repair_mode_a_pool_left_behind_hands_out_fresh_connections(make_engine, mechanism):
    """A pool the child still reaches after its engine got a fresh one (here: a reference
    taken before the fork) recycles its inherited records through SQLAlchemy's soft
    invalidation, so the checkout listener never has to look for stand-ins."""
    forkguard.install(mode="repair")
    engine = make_engine(URLS["psycopg2"])
    with engine.connect() as conn:
        parent_session = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    old_pool = engine.pool

    def child() -> object:
        with engine.connect():  # handles the fork (ctypes: no hook ran) and replaces the pool
            pass
        assert engine.pool is not old_pool
        conn = old_pool.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
        finally:
            conn.close()

    result = run_in_child(child, mechanism)
    assert result["ok"], result
    assert result["value"] != parent_session
    with engine.connect() as conn:  # the parent's session is untouched
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() == parent_session


@pytest.mark.parametrize("mode", ["repair", "strict"])
def test_checkout_fast_path_is_armed_only_where_nothing_is_left_to_catch(make_engine, mode):
    """The checkout listener reads one byte: set in the parent and in a repaired child, clear
    in a strict child that holds stand-ins (its checkouts must still refuse them)."""
    from forkguard import sqlalchemy as fg_sa

    if fg_sa._checkout_clear is None:
        pytest.skip("no MADV_WIPEONFORK here: every checkout takes the checked path")
    forkguard.install(mode=mode)
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert bool(fg_sa._checkout_clear)

    def child() -> object:
        before = bool(fg_sa._checkout_clear)  # libc fork: nothing has run yet
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except forkguard.InheritedConnectionError:
            pass
        return [before, bool(fg_sa._checkout_clear)]

    result = run_in_child(child, "ctypes")
    assert result["ok"], result
    assert result["value"] == [False, mode == "repair"]
    assert bool(fg_sa._checkout_clear)


def test_warn_mode_logs_where_the_connection_was_opened(make_engine, tmp_path):
    log_file = tmp_path / "child.log"
    forkguard.install(mode="warn")
    engine = make_engine(URLS["pymysql"])
    with engine.connect() as conn:  # WARN-OPENED
        conn.execute(sa.text("SELECT 1"))

    def child() -> None:
        handler = logging.FileHandler(log_file)
        logging.getLogger("forkguard").addHandler(handler)
        logging.getLogger("forkguard").setLevel(logging.INFO)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # os.fork runs the at-fork hook before `child` sets up logging, so use the pid-check path.
    assert run_in_child(child, "ctypes")["ok"]
    text = log_file.read_text()
    assert "inherited a PyMySQL connection" in text
    assert f"{__file__}:{line_of('# WARN-OPENED')}" in text


def test_trace_captures_the_full_stack(make_engine):
    forkguard.install(mode="strict", trace=True)
    engine = make_engine(URLS["pymysql"])
    held = engine.connect()
    held.execute(sa.text("SELECT 1"))

    def child() -> str:
        try:
            held.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return str(inherited_error(exc))
        return ""

    message = run_in_child(child)["value"]
    assert "Opened at:" in message
    assert "test_trace_captures_the_full_stack" in message
    held.close()


@pytest.mark.parametrize("bad", ["fix", "", "STRICTER", 3])
def test_bad_mode_is_a_clear_error(bad):
    with pytest.raises(forkguard.ConfigurationError, match="repair, warn, strict"):
        forkguard.configure(mode=bad)


def test_bad_environment_values_are_clear_errors():
    for env, expected in (
        ({"FORKGUARD_MODE": "sometimes"}, "FORKGUARD_MODE='sometimes' is not a valid mode"),
        ({"FORKGUARD_TRACE": "maybe"}, "FORKGUARD_TRACE='maybe' is not a valid flag"),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", "import forkguard; forkguard.install()"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        assert expected in proc.stderr


def test_environment_mode_is_applied(monkeypatch):
    monkeypatch.setenv("FORKGUARD_MODE", "WARN")
    monkeypatch.setenv("FORKGUARD_TRACE", "on")
    forkguard.install()
    from forkguard._config import settings

    assert (settings.mode, settings.trace) == ("warn", True)
