"""Issue 5.1: a Django project whose AppConfig.ready() queries the database, preloaded by real
gunicorn (--preload, 4 workers) and real uWSGI (master + 4 processes, no lazy-apps), on MariaDB
(mysqlclient) and PostgreSQL (psycopg 3), under concurrent load.

With ``INSTALLED_APPS += ["forkguard.django"]``: every worker has its own session, zero HTTP
errors, zero echo mismatches. Without it: every worker talks on the master's session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa

from forkguard_lab.harness.commands import default_gunicorn_argv, default_uwsgi_argv
from forkguard_lab.harness.prefork import ServerProcess

from ..conftest import URLS
from ._serve import (
    WORKERS,
    Started,
    base_env,
    every_worker,
    free_port,
    log_errors,
    run_load,
    sessions_by_worker,
)

DB_URL = {"mysql": URLS["mysqlclient"], "postgresql": URLS["psycopg"]}


def _argv(server: str, port: int) -> list[str]:
    app = "fg_djproject.wsgi:application"
    if server == "gunicorn":
        return default_gunicorn_argv(
            app, port, WORKERS, extra=["--timeout", "8", "--graceful-timeout", "3"]
        )
    return default_uwsgi_argv(app, port, WORKERS, ["--harakiri", "8"])


@pytest.fixture
def table() -> Iterator[Callable[[str], str]]:
    made: list[tuple[str, str]] = []

    def make(vendor: str) -> str:
        name = f"fg_i5_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(DB_URL[vendor], poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {name} (token VARCHAR(64), pid INT)"))
        made.append((vendor, name))
        return name

    yield make
    for vendor, name in made:
        engine = sa.create_engine(DB_URL[vendor], poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


@pytest.fixture
def django_server(tmp_path: Path, table: Callable[[str], str]) -> Iterator[Any]:
    with Started(tmp_path) as procs:

        def start(
            server: str, vendor: str, guarded: bool, max_age: str = "none"
        ) -> tuple[ServerProcess, str]:
            port = free_port()
            env = base_env(
                FG_DJ_VENDOR=vendor,
                FG_GUARD="1" if guarded else "0",
                FG_DJ_MAX_AGE=max_age,
                FG_DJ_HEALTH="1",
                FG_DJ_TABLE=table(vendor),
                DJANGO_SETTINGS_MODULE="fg_djproject.settings",
            )
            url = f"http://127.0.0.1:{port}/echo"
            log_name = f"{server}-{vendor}.log"
            return procs.server(_argv(server, port), env, log_name, f"{url}?token=ready"), url

        yield start


def _echo_check(token: str, body: dict[str, Any]) -> str | None:
    if body.get("echoed") != token or body.get("row") != token:
        return f"sent {token}, got echo {body.get('echoed')} row {body.get('row')}"
    return None


def _check(token: str, body: dict[str, Any]) -> str | None:
    problem = _echo_check(token, body)
    if problem:
        return problem
    if body.get("session") == body.get("master_session"):
        return f"pid {body['pid']} used the master's session {body['session']}"
    return None


SERVERS = ("gunicorn", "uwsgi")
VENDORS = ("mysql", "postgresql")


GUARDED_CASES = [
    *[(server, vendor, "none") for server in SERVERS for vendor in VENDORS],
    # Django's default CONN_MAX_AGE=0 (a connection per request), once per server.
    ("gunicorn", "mysql", "0"),
    ("uwsgi", "postgresql", "0"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("server", "vendor", "max_age"), GUARDED_CASES)
def test_with_forkguard_every_worker_has_its_own_session(
    django_server: Any, server: str, vendor: str, max_age: str
) -> None:
    proc, url = django_server(server, vendor, guarded=True, max_age=max_age)
    load = run_load(url, _check, threads=8, per_thread=50)
    # Zero errors, every echo and row our own, no reply on the master's session (_check).
    assert not load.errors and not load.mismatches, load.summary()
    assert load.ok == 8 * 50
    workers = sessions_by_worker(load.replies)
    assert len(workers) == WORKERS, workers
    assert all(r["pid"] != r["master_pid"] for r in load.replies)
    # No session is ever shared between two workers.
    all_sessions = [s for sessions in workers.values() for s in sessions]
    assert len(all_sessions) == len(set(all_sessions)), workers
    if max_age == "none":  # persistent: one session per worker for its whole life
        assert all(len(sessions) == 1 for sessions in workers.values()), workers
    assert not log_errors(proc.read_log()), proc.read_log()[-5000:]


@pytest.mark.slow
@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("server", SERVERS)
def test_without_forkguard_workers_share_the_masters_session(
    django_server: Any, server: str, vendor: str
) -> None:
    _proc, url = django_server(server, vendor, guarded=False)
    # Sequential requests: no interleaving yet, so each worker answers - on the master's session.
    workers = every_worker(url, timeout=10)
    assert len(workers) >= 2, workers
    assert all(r["session"] == r["master_session"] for r in workers.values()), workers
    # Concurrent requests on that one socket: errors or someone else's reply.
    load = run_load(
        url, _echo_check, threads=8, per_thread=25, timeout=4, deadline=20, stop_after_failures=20
    )
    assert load.errors or load.mismatches, load.summary()
