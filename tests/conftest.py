"""Shared fixtures: the real local MariaDB and PostgreSQL, one engine factory, clean forkguard."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import sqlalchemy as sa

import forkguard
from forkguard import _config

MYSQL_HOST = os.environ.get("FG_TEST_MYSQL", "127.0.0.1:3306")
PG_HOST = os.environ.get("FG_TEST_PG", "127.0.0.1:5432")

URLS = {
    "pymysql": f"mysql+pymysql://root@{MYSQL_HOST}/test",
    "mysqlclient": f"mysql+mysqldb://root@{MYSQL_HOST}/test",
    "psycopg2": f"postgresql+psycopg2://root@{PG_HOST}/test",
    "psycopg": f"postgresql+psycopg://root@{PG_HOST}/test",
    "mysql-connector": f"mysql+mysqlconnector://root@{MYSQL_HOST}/test",
}
SA_2 = int(sa.__version__.split(".")[0]) >= 2
# SQLAlchemy 1.4 has no psycopg 3 dialect.
SOCKET_DRIVERS = tuple(name for name in URLS if SA_2 or name != "psycopg")
SESSION_ID_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}


def session_id_sql(url: str) -> str:
    return SESSION_ID_SQL[sa.engine.make_url(url).get_backend_name()]


def pytest_sessionstart(session: pytest.Session) -> None:
    for name in ("pymysql", "psycopg2"):
        engine = sa.create_engine(URLS[name], poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            pytest.exit(
                f"forkguard tests need the local database servers ({URLS[name]}): {exc}\n"
                "start them with `make services`",
                returncode=3,
            )
        finally:
            engine.dispose()


@pytest.fixture(autouse=True)
def _clean_forkguard() -> Iterator[None]:
    """Every test starts and ends with forkguard uninstalled and default settings."""
    forkguard.uninstall()
    _config.reset()
    for var in ("FORKGUARD_MODE", "FORKGUARD_TRACE", "FORKGUARD_FREEZE_GC"):
        os.environ.pop(var, None)
    yield
    forkguard.uninstall()
    _config.reset()


@pytest.fixture
def make_engine() -> Iterator[Callable[..., sa.engine.Engine]]:
    engines: list[sa.engine.Engine] = []

    def make(url: str, **kwargs: Any) -> sa.engine.Engine:
        engine = sa.create_engine(url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def table_name() -> str:
    return f"fg_t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def drop_tables() -> Iterator[list[tuple[str, str]]]:
    """Tests append (url, table) pairs; each is dropped afterwards on a fresh connection."""
    created: list[tuple[str, str]] = []
    yield created
    for url, table in created:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        finally:
            engine.dispose()


def inherited_error(exc: BaseException) -> BaseException | None:
    """The InheritedConnectionError behind ``exc`` (SQLAlchemy 1.4 wraps it in StatementError)."""
    if isinstance(exc, forkguard.InheritedConnectionError):
        return exc
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, forkguard.InheritedConnectionError) else None


# ---- nothing skips silently ---------------------------------------------------------------
# `make test` sets FORKGUARD_NO_SKIP=1: there, a test skipped because a binary, a package or a
# service is missing fails the run (the setup script installs everything the suite needs), and
# the summary names each skip and its reason. Without it (a developer's partial run) skips stay
# skips, with their reasons printed by -ra.
NO_SKIP = os.environ.get("FORKGUARD_NO_SKIP") == "1"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if not NO_SKIP or not skipped:
        return
    terminalreporter.section("FORKGUARD_NO_SKIP=1: skipped tests fail this run", red=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        terminalreporter.write_line(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if NO_SKIP and reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
