"""Issue 17: ``forkguard.install()`` protects wherever it is called. Placements inside real
servers, each with a twin (the same server without forkguard) that shows the breakage:

* Celery: ``forkguard.install()`` only in a ``@worker_process_init.connect`` handler, in each
  prefork pool process after the fork, around an engine the master used at import.
* gunicorn ``--preload`` with a ``gunicorn.conf.py`` that calls ``forkguard.install()`` before
  the app, a Django project whose ``AppConfig.ready()`` queries in the master, is imported
  (and with no ``forkguard.django`` in INSTALLED_APPS).
* uWSGI (master + 2 workers, no lazy-apps) serving a virtualenv without ``uwsgidecorators``
  (issue 17 item 8): ``install()`` must not raise, must protect the workers, and must keep the
  user's own ``uwsgi.post_fork_hook``.

Every server runs in its own process group and is stopped by it; tables are ``fg_placement_*``
and dropped; Redis keys live under a unique prefix and are deleted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa

from forkguard_lab.harness.commands import default_gunicorn_argv, default_uwsgi_argv
from forkguard_lab.harness.prefork import ServerProcess

from ..conftest import URLS
from . import test_celery_prefork as _celery_prefork
from ._serve import (
    APPS,
    Started,
    base_env,
    celery_client,
    celery_results,
    celery_worker_argv,
    drop_redis_keys,
    every_worker,
    free_port,
    get_json,
    log_errors,
    run_load,
)

PROCESSES = 2  # workers per server: the machine has two cores, shared


# ---- Celery: install() in a worker_process_init handler ---------------------------------------

CELERY_DB_URL = URLS["psycopg2"]
CELERY_TASKS = 16
broker = _celery_prefork.broker  # the local Redis, or a private redis-server


@pytest.fixture
def celery_placement(
    tmp_path: Path, broker: str
) -> Iterator[Callable[[str], tuple[ServerProcess, Any]]]:
    pytest.importorskip("celery")
    names: list[str] = []
    with Started(tmp_path) as procs:

        def start(guard: str) -> tuple[ServerProcess, Any]:
            name = f"fg_placement_{uuid.uuid4().hex[:10]}"
            env = {
                "FG_DB_URL": CELERY_DB_URL,
                "FG_BROKER": broker,
                "FG_QUEUE": name,
                "FG_KEYPREFIX": f"{name}:",
                "FG_GUARD": guard,
            }
            names.append(name)
            argv = celery_worker_argv("fg_placement_celery_app", PROCESSES, name)
            proc = procs.process(argv, base_env(**env), f"celery-{guard}.log")
            return proc, celery_client(name, broker)

        yield start
    for name in names:
        drop_redis_keys(broker, name)


def _celery_tasks(proc: ServerProcess, client: Any, count: int, timeout: float) -> dict[str, Any]:
    calls: list[list[Any]] = [[] for _ in range(count)]
    done, failures = celery_results(proc, client, "fg_placement_celery_app.session", calls, timeout)
    return {"replies": [value for _, value in done], "failures": failures}


def _assert_celery_protected(proc: ServerProcess, out: dict[str, Any], *, late: bool) -> None:
    assert not out["failures"], (out["failures"][:3], proc.read_log()[-5000:])
    replies = out["replies"]
    assert len(replies) == CELERY_TASKS
    by_pid: dict[int, set[Any]] = {}
    for reply in replies:
        assert reply["install_error"] is None, reply
        assert reply["pid"] != reply["master_pid"]
        assert reply["session"] != reply["master_session"], reply
        by_pid.setdefault(reply["pid"], set()).add(reply["session"])
        stats = reply["stats"]
        assert stats["forks_seen"] >= 1, reply
        assert stats["connections_neutralized"] >= 1, reply
        if late:
            assert stats.get("late_installs", 0) >= 1, reply
            # A WARNING names the handler's install() line and says to move it before the fork.
            path, line = reply["install_site"].rsplit(":", 1)
            warnings = [r["message"] for r in reply["log"] if r["level"] == "WARNING"]
            assert any(
                os.path.basename(path) in m and line in m and "fork" in m.lower() for m in warnings
            ), (reply["install_site"], reply["log"])
    sessions = [s for group in by_pid.values() for s in group]
    assert len(sessions) == len(set(sessions)), by_pid  # no two pool processes share one
    assert not log_errors(proc.read_log()), proc.read_log()[-5000:]


@pytest.mark.slow
def test_celery_install_in_worker_process_init_protects_the_pool_processes(
    celery_placement: Any,
) -> None:
    proc, client = celery_placement("1")
    _assert_celery_protected(proc, _celery_tasks(proc, client, CELERY_TASKS, 30), late=True)


@pytest.mark.slow
def test_celery_control_install_at_import(celery_placement: Any) -> None:
    """The placement that always worked, through the same app and checks."""
    proc, client = celery_placement("import")
    _assert_celery_protected(proc, _celery_tasks(proc, client, CELERY_TASKS, 30), late=False)


@pytest.mark.slow
def test_celery_worker_process_init_without_install_shares_the_masters_session(
    celery_placement: Any,
) -> None:
    proc, client = celery_placement("0")
    out = _celery_tasks(proc, client, CELERY_TASKS, timeout=20)
    shared = [r for r in out["replies"] if r["session"] == r["master_session"]]
    print(len(out["replies"]), len(shared), out["failures"][:3])
    assert shared or out["failures"], out


# ---- gunicorn --preload: install() in gunicorn.conf.py, before Django is imported -----------

DJ_VENDOR = "postgresql"
DJ_DB_URL = URLS["psycopg"]


@pytest.fixture
def gunicorn_django(tmp_path: Path) -> Iterator[Callable[..., tuple[ServerProcess, str]]]:
    pytest.importorskip("django")
    tables: list[str] = []
    with Started(tmp_path) as procs:

        def start(install: bool, installed_app: bool = False) -> tuple[ServerProcess, str]:
            table = f"fg_placement_{uuid.uuid4().hex[:10]}"
            engine = sa.create_engine(DJ_DB_URL, poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                conn.execute(sa.text(f"CREATE TABLE {table} (token VARCHAR(64), pid INT)"))
            tables.append(table)
            port = free_port()
            env = base_env(
                FG_DJ_VENDOR=DJ_VENDOR,
                # No forkguard.django in INSTALLED_APPS (but in the control): gunicorn.conf.py only.
                FG_GUARD="1" if installed_app else "0",
                FG_PLACEMENT_INSTALL="1" if install else "0",
                FG_DJ_MAX_AGE="none",
                FG_DJ_TABLE=table,
                DJANGO_SETTINGS_MODULE="fg_djproject.settings",
            )
            config = ["--config", str(APPS / "fg_placement_gunicorn_conf.py")]
            timeouts = ["--timeout", "8", "--graceful-timeout", "3"]
            argv = default_gunicorn_argv(
                "fg_djproject.wsgi:application", port, PROCESSES, extra=[*config, *timeouts]
            )
            url = f"http://127.0.0.1:{port}/echo"
            log_name = f"gunicorn-{install}-{installed_app}.log"
            return procs.server(argv, env, log_name, f"{url}?token=ready"), url

        yield start
    for table in tables:
        engine = sa.create_engine(DJ_DB_URL, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


def _echo_check(token: str, body: dict[str, Any]) -> str | None:
    if body.get("echoed") != token or body.get("row") != token:
        return f"sent {token}, got echo {body.get('echoed')} row {body.get('row')}"
    if body.get("session") == body.get("master_session"):
        return f"pid {body['pid']} used the master's session {body['session']}"
    return None


def _assert_gunicorn_protected(proc: ServerProcess, url: str) -> None:
    assert "fg_placement: install() with django imported: False" in proc.read_log(), proc.read_log()
    workers = every_worker(url, workers=PROCESSES, timeout=15)
    assert len(workers) == PROCESSES, (workers, proc.read_log()[-5000:])
    for reply in workers.values():
        assert reply["session"] != reply["master_session"], workers
    load = run_load(url, _echo_check, threads=4, per_thread=15)
    assert not load.errors and not load.mismatches, load.summary()
    sessions: dict[int, set[Any]] = {}
    for reply in [*workers.values(), *load.replies]:
        sessions.setdefault(reply["pid"], set()).add(reply["session"])
    flat = [s for group in sessions.values() for s in group]
    assert len(flat) == len(set(flat)), sessions  # persistent: one session per worker, unshared
    assert not log_errors(proc.read_log()), proc.read_log()[-5000:]


@pytest.mark.slow
def test_gunicorn_conf_install_before_django_protects_the_workers(gunicorn_django: Any) -> None:
    _assert_gunicorn_protected(*gunicorn_django(True))


@pytest.mark.slow
def test_gunicorn_control_conf_install_plus_forkguard_django_app(gunicorn_django: Any) -> None:
    """The same server and checks, Django guarded the way that always worked."""
    _assert_gunicorn_protected(*gunicorn_django(True, installed_app=True))


@pytest.mark.slow
def test_gunicorn_without_install_workers_share_the_masters_django_session(
    gunicorn_django: Any,
) -> None:
    _proc, url = gunicorn_django(False)
    workers = every_worker(url, workers=PROCESSES, timeout=15)
    assert workers, "no worker answered"
    assert all(r["session"] == r["master_session"] for r in workers.values()), workers


# ---- uWSGI without uwsgidecorators ------------------------------------------------------------

UWSGI_DB_URL = URLS["pymysql"]


@pytest.fixture
def uwsgi_without_decorators(
    tmp_path: Path,
) -> Iterator[Callable[..., tuple[ServerProcess, str, Path]]]:
    with Started(tmp_path) as procs:

        def start(guard: bool | str, block: bool = True) -> tuple[ServerProcess, str, Path]:
            port = free_port()
            hook_log = tmp_path / f"hook-{guard}-{block}.log"
            env = base_env(
                FG_GUARD=guard if isinstance(guard, str) else "1" if guard else "0",
                FG_BLOCK_DECORATORS="1" if block else "0",
                FG_DB_URL=UWSGI_DB_URL,
                FG_HOOK_LOG=str(hook_log),
            )
            argv = default_uwsgi_argv("fg_placement_uwsgi_app:application", port, PROCESSES)
            url = f"http://127.0.0.1:{port}/"
            return procs.server(argv, env, f"uwsgi-{guard}-{block}.log", url), url, hook_log

        yield start


def _assert_uwsgi_protected(
    proc: ServerProcess, url: str, hook_log: Path, *, blocked: bool
) -> None:
    status, first = get_json(url)
    assert status == 200, first
    assert first["decorators_importable"] is not blocked
    assert first["install_error"] is None, first  # install() did not raise
    workers = every_worker(url, workers=PROCESSES, timeout=15)
    assert len(workers) == PROCESSES, (workers, proc.read_log()[-5000:])
    sessions = {reply["session"] for reply in workers.values()}
    assert first["master_session"] not in sessions, workers
    assert len(sessions) == PROCESSES, workers  # one session per worker
    for reply in workers.values():
        assert reply["stats"]["forks_seen"] >= 1, reply
        assert reply["stats"]["connections_neutralized"] >= 1, reply
    # The user's own uwsgi.post_fork_hook, set before install(), still ran in every worker.
    hooked = sorted(map(int, hook_log.read_text().split())) if hook_log.exists() else []
    assert sorted(workers) == hooked, (hooked, sorted(workers))
    assert not log_errors(proc.read_log()), proc.read_log()[-5000:]


@pytest.mark.slow
def test_uwsgi_without_uwsgidecorators_install_protects_and_keeps_the_users_hook(
    uwsgi_without_decorators: Any,
) -> None:
    _assert_uwsgi_protected(*uwsgi_without_decorators(True), blocked=True)


@pytest.mark.slow
def test_uwsgi_control_with_uwsgidecorators(uwsgi_without_decorators: Any) -> None:
    """The same app and checks with uwsgidecorators importable, as it always worked."""
    _assert_uwsgi_protected(*uwsgi_without_decorators(True, block=False), blocked=False)


@pytest.mark.slow
def test_uwsgi_install_inside_a_postfork_hook_runs_that_hook_once_per_worker(
    uwsgi_without_decorators: Any,
) -> None:
    _assert_uwsgi_protected(*uwsgi_without_decorators("postfork", block=False), blocked=False)


@pytest.mark.slow
def test_uwsgi_without_uwsgidecorators_and_forkguard_workers_share_the_masters_session(
    uwsgi_without_decorators: Any,
) -> None:
    _proc, url, hook_log = uwsgi_without_decorators(False)
    workers = every_worker(url, workers=PROCESSES, timeout=15)
    assert workers, "no worker answered"
    assert all(r["session"] == r["master_session"] for r in workers.values()), workers
    # The harness's own check: uWSGI runs a plain uwsgi.post_fork_hook in every worker.
    assert sorted(map(int, hook_log.read_text().split())) == sorted(workers)
