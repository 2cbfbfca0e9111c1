"""Issue 5.2: a Celery prefork worker (4 processes) whose app module opened a SQLAlchemy
connection at import. With ``forkguard.install()`` in the module, and no
``worker_process_init`` boilerplate, tasks write and read through the inherited engine with
zero failures, each pool process on its own session. Without it, they share the master's.

Broker and result backend: the local Redis (keys under a unique ``fg_i5_`` prefix, removed
afterwards); a private ``redis-server`` on a free port if the local one does not answer.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from forkguard_lab.harness.prefork import ServerProcess

from ..conftest import URLS
from ._serve import (
    WORKERS,
    Started,
    base_env,
    celery_client,
    celery_results,
    celery_worker_argv,
    drop_redis_keys,
    free_port,
    log_errors,
)

redis = pytest.importorskip("redis")
pytest.importorskip("celery")

DB_URLS = {"mysql": URLS["mysqlclient"], "postgresql": URLS["psycopg"]}
TASKS = 120


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    local = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(local, socket_timeout=2).ping()
        yield local
        return
    except redis.RedisError:
        pass
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no Redis at 127.0.0.1:6379 and no redis-server to start one")
    port = free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    url = f"redis://127.0.0.1:{port}/0"
    with Started(tmp_path_factory.mktemp("redis")) as procs:
        proc = procs.process(argv, base_env(), "redis.log")
        proc.wait_until(lambda: _pings(url), 15, "redis-server")
        yield url


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def celery_worker(tmp_path: Path, broker: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[tuple[str, str]] = []
    with Started(tmp_path) as procs:

        def start(vendor: str, guard: str) -> tuple[ServerProcess, Any]:
            name = f"fg_i5_{uuid.uuid4().hex[:10]}"
            engine = sa.create_engine(DB_URLS[vendor], poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                conn.execute(sa.text(f"CREATE TABLE {name} (token VARCHAR(64), pid INT)"))
            made.append((vendor, name))
            env = {
                "FG_DB_URL": DB_URLS[vendor],
                "FG_TABLE": name,
                "FG_BROKER": broker,
                "FG_QUEUE": name,
                "FG_KEYPREFIX": f"{name}:",
                "FG_GUARD": guard,
            }
            argv = celery_worker_argv("fg_celery_app", WORKERS, name)
            proc = procs.process(argv, base_env(**env), f"celery-{vendor}.log")
            # The sending side: the same configuration, no database.
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            return proc, celery_client(name, broker)

        yield start
    for vendor, name in made:
        engine = sa.create_engine(DB_URLS[vendor], poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        drop_redis_keys(broker, name)


def _run_tasks(proc: ServerProcess, client: Any, count: int, timeout: float) -> dict[str, Any]:
    tokens = [uuid.uuid4().hex for _ in range(count)]
    calls = [[t] for t in tokens]
    done, failures = celery_results(
        proc, client, "fg_celery_app.write_and_read", calls, timeout, warmup_args=["warmup"]
    )
    replies: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for (token,), value in done:
        if value["row"] != token or value["echoed"] != token:
            mismatches.append(f"sent {token}, got row {value['row']} echo {value['echoed']}")
        else:
            replies.append(value)
    return {"replies": replies, "failures": failures, "mismatches": mismatches}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("vendor", "guard"),
    [("mysql", "1"), ("postgresql", "celery")],
    ids=["mysql-forkguard.install", "postgresql-forkguard.celery.install"],
)
def test_prefork_tasks_run_on_their_own_sessions_with_forkguard(
    celery_worker: Any, vendor: str, guard: str
) -> None:
    proc, client = celery_worker(vendor, guard)
    out = _run_tasks(proc, client, TASKS, timeout=60)
    assert not out["failures"] and not out["mismatches"], (out, proc.read_log()[-5000:])
    replies = out["replies"]
    assert len(replies) == TASKS
    by_pid: dict[int, set[Any]] = {}
    for reply in replies:
        assert reply["pid"] != reply["master_pid"]
        assert reply["session"] != reply["master_session"]
        by_pid.setdefault(reply["pid"], set()).add(reply["session"])
        assert reply["stats"]["connections_neutralized"] >= 1
    assert len(by_pid) >= 2  # the work was spread over several pool processes
    # Each process keeps one session of its own (the pool reuses it); none is shared.
    sessions = [s for group in by_pid.values() for s in group]
    assert len(sessions) == len(set(sessions))
    assert not log_errors(proc.read_log()), proc.read_log()[-5000:]


@pytest.mark.slow
@pytest.mark.parametrize("vendor", ["mysql", "postgresql"])
def test_without_forkguard_pool_processes_share_the_masters_session(
    celery_worker: Any, vendor: str
) -> None:
    proc, client = celery_worker(vendor, "0")
    out = _run_tasks(proc, client, 24, timeout=20)
    shared = [r for r in out["replies"] if r["session"] == r["master_session"]]
    print(
        vendor,
        len(out["replies"]),
        len(shared),
        out["failures"][:3],
        len(out["failures"]),
        out["mismatches"][:3],
    )
    assert shared or out["failures"] or out["mismatches"], out
    assert out["failures"] or out["mismatches"] or len(shared) == len(out["replies"]), out
