"""Issue 5.3: SQLAlchemy's asyncio engine (asyncpg, aiomysql) in an ASGI app preloaded by
gunicorn with uvicorn workers (``-k uvicorn_worker.UvicornWorker --preload -w 4``).

The app opens a connection at import in a loop that ``asyncio.run`` then closes. With
forkguard: each worker's connections are its own (fresh pool, on the worker's loop), zero
errors under concurrent load, no "attached to a different loop". Without: errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab.harness.commands import default_gunicorn_argv
from forkguard_lab.harness.prefork import ServerProcess

from ._serve import (
    WORKERS,
    Started,
    base_env,
    free_port,
    log_errors,
    run_load,
    sessions_by_worker,
)

pytest.importorskip("uvicorn")
WORKER_CLASS = "uvicorn_worker.UvicornWorker"
try:
    import uvicorn_worker  # noqa: F401
except ImportError:  # older uvicorn ships the worker itself
    WORKER_CLASS = "uvicorn.workers.UvicornWorker"

URLS = {
    "asyncpg": "postgresql+asyncpg://root@127.0.0.1:5432/test",
    "aiomysql": "mysql+aiomysql://root@127.0.0.1:3306/test",
}


@pytest.fixture
def asgi_server(tmp_path: Path) -> Iterator[Any]:
    with Started(tmp_path) as procs:

        def start(driver: str, guard: str) -> tuple[ServerProcess, str]:
            pytest.importorskip(driver)
            port = free_port()
            extra = ["-k", WORKER_CLASS, "--timeout", "8", "--graceful-timeout", "3"]
            argv = default_gunicorn_argv("fg_asgi_app:app", port, WORKERS, extra=extra)
            env = base_env(FG_DB_URL=URLS[driver], FG_GUARD=guard)
            url = f"http://127.0.0.1:{port}/echo"
            return procs.server(argv, env, f"gunicorn-{driver}.log", f"{url}?token=ready"), url

        yield start


def _check(token: str, body: dict[str, Any]) -> str | None:
    if body.get("echoed") != token:
        return f"sent {token}, got {body.get('echoed')}"
    if body.get("session") == body.get("master_session"):
        return f"pid {body['pid']} used the master's session {body['session']}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["asyncpg", "aiomysql"])
def test_uvicorn_workers_get_fresh_connections(asgi_server: Any, driver: str) -> None:
    proc, url = asgi_server(driver, "1")
    load = run_load(url, _check, threads=8, per_thread=50)
    # Zero errors, every echo our own, no reply on the master's session (_check).
    assert not load.errors and not load.mismatches, load.summary()
    workers = sessions_by_worker(load.replies)
    assert len(workers) == WORKERS, workers
    for reply in load.replies:
        assert reply["pid"] != reply["master_pid"]
        assert reply["stats"]["connections_neutralized"] == 1
        assert reply["stats"]["pools_replaced"] >= 1
    # Sessions are never shared between workers.
    all_sessions = [s for sessions in workers.values() for s in sessions]
    assert len(all_sessions) == len(set(all_sessions)), workers
    text = proc.read_log()
    assert "attached to a different loop" not in text
    assert not log_errors(text), text[-5000:]


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["asyncpg", "aiomysql"])
def test_without_forkguard_the_inherited_connection_fails(asgi_server: Any, driver: str) -> None:
    _proc, url = asgi_server(driver, "0")
    load = run_load(url, _check, threads=8, per_thread=10, timeout=4, deadline=20)
    assert load.errors or load.mismatches, load.summary()


@pytest.mark.slow
def test_plain_forkguard_install_is_enough_for_correctness(asgi_server: Any) -> None:
    """``forkguard.install()`` alone: zero errors; aiomysql's finalizer of the dropped inherited
    connection only prints "Event loop is closed" (what ``forkguard.asyncio.install()`` quiets)."""
    proc, url = asgi_server("aiomysql", "core")
    load = run_load(url, _check, threads=8, per_thread=25)
    assert not load.errors and not load.mismatches, load.summary()
    assert "attached to a different loop" not in proc.read_log()
