"""Real pre-fork servers: uWSGI forks from C (no Python at-fork hooks), gunicorn with os.fork()."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import URLS

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
APP = "tests.apps.prefork_app:application"


def _argv(server: str, port: int) -> list[str]:
    from forkguard_lab.harness.commands import default_gunicorn_argv, default_uwsgi_argv

    if server == "uwsgi":
        return default_uwsgi_argv(APP, port, WORKERS)
    return default_gunicorn_argv(APP, port, WORKERS)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    # The tools' venv only: the harness is forkguard-lab's.
    from forkguard_lab.harness.http import http_get
    from forkguard_lab.harness.prefork import ServerProcess
    from forkguard_lab.harness.servers import free_port

    procs: list[ServerProcess] = []

    def start(server: str, guarded: bool, freeze: bool = False) -> tuple[int, Path]:
        port = free_port()
        hook_log = tmp_path / f"hooks-{server}.log"
        env = {
            **os.environ,
            "FG_GUARD": "1" if guarded else "0",
            "FG_FREEZE": "1" if freeze else "0",
            "FG_DB_URL": URLS["pymysql"],
            "FG_HOOK_LOG": str(hook_log),
            "PYTHONPATH": str(ROOT),
        }
        proc = ServerProcess(_argv(server, port), env, str(tmp_path / f"{server}.log"), str(ROOT))
        procs.append(proc.start())
        proc.wait_until(lambda: http_get(port, "/")[0] == 200, 60, server)
        return port, hook_log

    yield start
    for proc in procs:
        proc.stop(term_timeout=20)


def _answers_from_every_worker(port: int) -> dict[int, dict[str, Any]]:
    from forkguard_lab.harness.http import http_get

    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(seen) < WORKERS and time.monotonic() < deadline:
        status, reply = http_get(port, "/")
        assert status == 200, reply
        seen[reply["pid"]] = reply
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_every_worker_gets_its_own_session(serve, server):
    port, hook_log = serve(server, guarded=True)
    workers = _answers_from_every_worker(port)
    assert len(workers) == WORKERS
    sessions = {reply["session"] for reply in workers.values()}
    master_session = next(iter(workers.values()))["master_session"]
    assert master_session not in sessions
    assert len(sessions) == WORKERS
    for reply in workers.values():
        assert reply["stats"]["forks_seen"] == 1
        assert reply["stats"]["connections_neutralized"] == 1
    if server == "uwsgi":  # the user's own @postfork hook still runs in every worker
        assert sorted(map(int, hook_log.read_text().split())) == sorted(workers)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_without_forkguard_workers_share_the_masters_session(serve, server):
    port, _ = serve(server, guarded=False)
    workers = _answers_from_every_worker(port)
    master_session = next(iter(workers.values()))["master_session"]
    assert any(reply["session"] == master_session for reply in workers.values())


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
@pytest.mark.parametrize("freeze", [True, False], ids=["freeze_gc", "default"])
def test_freeze_gc_happens_once_in_the_right_process(serve, server, freeze):
    port, _ = serve(server, guarded=True, freeze=freeze)
    workers = _answers_from_every_worker(port)
    assert len(workers) == WORKERS
    for reply in workers.values():
        if not freeze:
            assert reply["gc_freeze_count"] == 0
            assert reply["stats"]["gc_freezes"] == 0
        elif server == "gunicorn":  # the master froze right before forking this worker
            assert reply["gc_freeze_count"] > 1000
            assert reply["stats"]["gc_freezes"] == 0
        else:  # uWSGI runs no Python hook in its master: each worker froze once, itself
            assert reply["gc_freeze_count"] > 1000
            assert reply["stats"]["gc_freezes"] == 1
        assert reply["stats"]["connections_neutralized"] == 1
