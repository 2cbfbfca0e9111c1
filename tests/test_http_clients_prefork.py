"""An app that builds a network client at import, under real pre-fork servers (uWSGI x4 forking
from C, gunicorn --preload x4 with os.fork): an HTTP client calling a private HTTPS echo server
with keep-alive (requests, httpx), or a pika publisher with confirms on the local RabbitMQ.
Unprotected, the workers share the master's connection (the HTTPS server logs bad record MACs,
workers get errors or one another's replies; publishes fail or hang on confirms another worker
read); with forkguard every worker opens its own connection and nothing fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("requests")
pytest.importorskip("httpx")
pytest.importorskip("trustme")
pika = pytest.importorskip("pika")

from forkguard_lab.harness.https_echo import HttpsEcho, private_https_echo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
REQUESTS = 120
APP = "tests.apps.http_client_app:application"
# An unprotected pika worker can wait forever for a confirm another worker read: kill it.
HUNG_WORKER_TIMEOUT = {"uwsgi": ["--harakiri", "5"], "gunicorn": ["--timeout", "5"]}


@pytest.fixture
def echo() -> Iterator[HttpsEcho]:
    with private_https_echo() as server:
        yield server


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh ``fg_`` queue on the local RabbitMQ, deleted afterwards."""
    name = f"fg_prefork_{uuid.uuid4().hex[:10]}"
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    except pika.exceptions.AMQPConnectionError as exc:
        pytest.skip(f"no RabbitMQ on 127.0.0.1:5672: {exc}")
    conn.close()
    yield name
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    conn.channel().queue_delete(name)
    conn.close()


@pytest.fixture
def serve(tmp_path: Path, echo: HttpsEcho, queue: str) -> Iterator[Callable[[str, str, bool], int]]:
    from forkguard_lab.harness.commands import default_gunicorn_argv, default_uwsgi_argv
    from forkguard_lab.harness.http import http_get
    from forkguard_lab.harness.prefork import ServerProcess
    from forkguard_lab.harness.servers import free_port

    procs: list[ServerProcess] = []

    def start(server: str, client: str, guarded: bool) -> int:
        port = free_port()
        make_argv = default_uwsgi_argv if server == "uwsgi" else default_gunicorn_argv
        env = {
            **os.environ,
            "FG_GUARD": "1" if guarded else "0",
            "FG_CLIENT": client,
            "FG_ECHO_URL": echo.url,
            "FG_ECHO_CA": echo.ca_path,
            "FG_QUEUE": queue,
            "PYTHONPATH": str(ROOT),
        }
        log = str(tmp_path / f"{server}.log")
        argv = make_argv(APP, port, WORKERS, extra=HUNG_WORKER_TIMEOUT[server])
        proc = ServerProcess(argv, env, log, str(ROOT))
        procs.append(proc.start())
        proc.wait_until(lambda: http_get(port, "/")[0] == 200, 60, server)
        return port

    yield start
    for proc in procs:
        proc.stop(term_timeout=20)


def _load(port: int) -> list[Any]:
    from forkguard_lab.harness.http import http_get

    with ThreadPoolExecutor(max_workers=2 * WORKERS) as pool:
        return [reply for _, reply in pool.map(lambda _: http_get(port, "/"), range(REQUESTS))]


def _failures(replies: list[Any]) -> list[Any]:
    return [r for r in replies if not (isinstance(r, dict) and r.get("ok") and r.get("own"))]


CLIENTS = ["requests", "httpx", "pika"]


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_workers_open_their_own_connections(
    serve: Callable[[str, str, bool], int], echo: HttpsEcho, server: str, client: str
) -> None:
    port = serve(server, client, True)
    replies = _load(port)
    assert _failures(replies) == []
    assert len({r["pid"] for r in replies}) > 1  # the load reached several workers
    assert echo.errors() == []
    if client != "pika":
        # The master's start-up connection plus at most one per worker (a worker that never
        # served a request opened none).
        assert echo.connections() <= 1 + WORKERS


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_unprotected_workers_share_the_masters_connection(
    serve: Callable[[str, str, bool], int], echo: HttpsEcho, server: str, client: str
) -> None:
    """The twin: the same app and load without forkguard fails."""
    port = serve(server, client, False)
    failures = _failures(_load(port))
    tls_errors = [e for e in echo.errors() if "BAD_RECORD_MAC" in e or "bad record mac" in e]
    assert failures or tls_errors, "no failure without forkguard"
