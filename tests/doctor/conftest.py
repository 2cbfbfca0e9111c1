"""Helpers for the doctor's tests: run the real CLI in a subprocess against the real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

APPS = Path(__file__).parent / "apps"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}
PG = "host=127.0.0.1 port=5432 user=root dbname=test"
FG_DOC_MYSQL_TABLES = ("fg_doc_users", "fg_doc_campaigns")
FG_DOC_PG_TABLES = ("fg_doc_items",)
# A user's module (issue 17): the pooled connection is opened on line 3, then taken again
# on line 5 and never returned.
HELD = (
    "from sqlalchemy import create_engine, text\n"
    'engine = create_engine("mysql+pymysql://root@127.0.0.1:3306/test")\n'
    'with engine.connect() as c: c.execute(text("SELECT 1"))\n'
    "\n"
    "held = engine.connect()\n"
)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.stdout)
        return result


def doctor(*args: str, cwd: Path = APPS, timeout: float = 120) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "forkguard.cli", "doctor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def mark(relpath: str, marker: str) -> str:
    """``/abs/path:line`` of the line in a fixture app carrying ``# FG-MARK: marker``."""
    path = APPS / relpath
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if f"# FG-MARK: {marker}" in line:
            return f"{path}:{number}"
    raise AssertionError(f"no FG-MARK {marker!r} in {path}")


def mysql_limits() -> tuple[int, int]:
    import pymysql

    conn = pymysql.connect(**MYSQL)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.max_connections, @@SESSION.wait_timeout")
            row = cur.fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
    finally:
        conn.close()


def pg_max_connections() -> int:
    import psycopg2

    conn = psycopg2.connect(PG)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW max_connections")
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_fg_doc_tables() -> Iterator[None]:
    """The fixture apps create fg_doc_* tables; drop them when the session ends."""
    yield
    import psycopg2
    import pymysql

    conn = pymysql.connect(**MYSQL)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            for table in FG_DOC_MYSQL_TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()
    finally:
        conn.close()
    pg = psycopg2.connect(PG)
    try:
        with pg.cursor() as cur:
            for table in FG_DOC_PG_TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        pg.commit()
    finally:
        pg.close()
