"""Real pre-fork servers: uWSGI forks from C (no Python at-fork hooks), gunicorn with os.fork()."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import URLS

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _server_command(server: str, port: int) -> list[str]:
    from forkguard_lab.harness.commands import gunicorn_no_control_socket  # the tools' venv only

    if server == "uwsgi":
        return [
            str(BIN / "uwsgi"),
            "--master",
            "--processes",
            str(WORKERS),
            "--http-socket",
            f"127.0.0.1:{port}",
            "--module",
            "tests.apps.prefork_app:application",
            "--die-on-term",
            "--need-app",
            "--disable-logging",
        ]
    return [
        str(BIN / "gunicorn"),
        "--preload",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        *gunicorn_no_control_socket(),
        "tests.apps.prefork_app:application",
    ]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(server: str, guarded: bool, freeze: bool = False) -> tuple[int, Path]:
        port = _free_port()
        hook_log = tmp_path / f"hooks-{server}.log"
        env = {
            **os.environ,
            "FG_GUARD": "1" if guarded else "0",
            "FG_FREEZE": "1" if freeze else "0",
            "FG_DB_URL": URLS["pymysql"],
            "FG_HOOK_LOG": str(hook_log),
            "PYTHONPATH": str(ROOT),
        }
        with open(tmp_path / f"{server}.log", "wb") as log:
            proc = subprocess.Popen(
                _server_command(server, port),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _get(port)
                return port, hook_log
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((tmp_path / f"{server}.log").read_text()) from None
                time.sleep(0.2)
        raise RuntimeError(f"{server} did not answer: {(tmp_path / f'{server}.log').read_text()}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _answers_from_every_worker(port: int) -> dict[int, dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(seen) < WORKERS and time.monotonic() < deadline:
        reply = _get(port)
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
