"""What the integration tests add to :mod:`forkguard_lab.harness`: their apps' environment,
the processes a test started (stopped at its end), a token-echo load with a check of each
reply, and the error lines their servers' logs must not have.

Every process is started in its own session and stopped by process group (never by name):
:class:`forkguard_lab.harness.prefork.ServerProcess`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from forkguard_lab.harness.commands import executable
from forkguard_lab.harness.http import http_get, port_and_path
from forkguard_lab.harness.load import drive
from forkguard_lab.harness.prefork import ServerProcess
from forkguard_lab.harness.servers import free_port as free_port  # the tests' one free_port

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
WORKERS = 4
STOP_TIMEOUT = 8.0  # SIGTERM, then SIGKILL: a server's own shutdown runs, bounded
# Errors that mean a worker used (or lost) a connection it shares with its siblings.
DB_ERROR_MARKERS = (
    "Traceback",
    "Internal Server Error",
    "OperationalError",
    "InterfaceError",
    "ProgrammingError",
    "attached to a different loop",
    "another operation is in progress",
    "Event loop is closed",
    "Commands out of sync",
    "Lost connection",
    "server closed the connection",
    "Packet sequence number wrong",
)


def base_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(APPS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), **extra}


class Started:
    """The processes one test started, their logs in ``directory``; a context manager for a
    fixture (``with Started(tmp_path) as procs: yield ...``) that stops them all at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[ServerProcess] = []

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc in self.procs:
            proc.stop(term_timeout=STOP_TIMEOUT)

    def process(self, argv: list[str], env: dict[str, str], log_name: str) -> ServerProcess:
        proc = ServerProcess(argv, env, str(self.directory / log_name), cwd=str(ROOT)).start()
        self.procs.append(proc)
        return proc

    def server(
        self, argv: list[str], env: dict[str, str], log_name: str, ready_url: str
    ) -> ServerProcess:
        """A server, once it answers ``ready_url`` (any HTTP status)."""
        proc = self.process(argv, env, log_name)
        wait_http(proc, ready_url)
        return proc


def get_json(url: str, timeout: float = 10) -> tuple[int, Any]:
    """GET ``url`` (a 127.0.0.1 one): see :func:`forkguard_lab.harness.http.http_request`."""
    port, path = port_and_path(url)
    return http_get(port, path, timeout)


def wait_http(proc: ServerProcess, url: str, timeout: float = 60) -> None:
    proc.wait_until(lambda: get_json(url, timeout=5)[0] > 0, timeout, f"server at {url}")


def every_worker(url: str, workers: int = WORKERS, timeout: float = 20) -> dict[int, Any]:
    """One successful reply per worker pid (sequential requests, until all answered)."""
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        status, body = get_json(f"{url}{'&' if '?' in url else '?'}token=probe", timeout=5)
        if status == 200 and isinstance(body, dict):
            seen.setdefault(body["pid"], body)
    return seen


@dataclass
class Load:
    requests: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.requests} requests: {self.ok} ok, {len(self.errors)} errors, "
            f"{len(self.mismatches)} mismatches; first: {(self.errors + self.mismatches)[:3]}"
        )


def run_load(
    url: str,
    check: Callable[[str, dict[str, Any]], str | None],
    threads: int = 8,
    per_thread: int = 50,
    timeout: float = 10,
    deadline: float = 60,
    stop_after_failures: int | None = None,
) -> Load:
    """``threads`` x ``per_thread`` GETs of ``url?token=...``; ``check`` names a mismatch.

    Every request in flight at ``deadline`` is waited for (at most ``timeout``)."""
    port, path = port_and_path(url)
    result = Load()
    stop = threading.Event()

    def request(i: int, rng: object) -> tuple[str, int, Any]:
        token = uuid.uuid4().hex
        status, body = http_get(port, f"{path}?token={token}", timeout)
        return token, status, body

    def keep(reply: tuple[str, int, Any]) -> None:
        token, status, body = reply
        result.requests += 1
        if status != 200 or not isinstance(body, dict):
            result.errors.append(f"{status}: {str(body)[:300]}")
        elif problem := check(token, body):
            result.mismatches.append(problem)
        else:
            result.ok += 1
            result.replies.append(body)
        failures = len(result.errors) + len(result.mismatches)
        if stop_after_failures is not None and failures >= stop_after_failures:
            stop.set()

    drive(request, keep, total=threads * per_thread, concurrency=threads, time_cap=deadline,
          grace=timeout + 5, lock=threading.Lock(), stop=stop)  # fmt: skip
    return result


def sessions_by_worker(replies: list[dict[str, Any]]) -> dict[int, set[Any]]:
    """pid -> the database sessions that worker reported."""
    seen: dict[int, set[Any]] = {}
    for reply in replies:
        seen.setdefault(reply["pid"], set()).add(reply["session"])
    return seen


def log_errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in DB_ERROR_MARKERS)]


# ---- Celery: one prefork worker command line and one client configuration ----------------------


def celery_worker_argv(app: str, concurrency: int, name: str) -> list[str]:
    """A prefork worker for ``app`` on its own queue ``name`` (no gossip/mingle: tests only)."""
    return [
        executable("celery"),
        "-A",
        app,
        "worker",
        "--pool=prefork",
        "--concurrency",
        str(concurrency),
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{name}@%h",
    ]


def celery_client(name: str, broker: str) -> Any:
    """The sending side for the worker on queue ``name``: its keys are prefixed ``name:``."""
    from celery import Celery

    client = Celery(f"{name}_client", broker=broker, backend=broker)
    prefix = {"global_keyprefix": f"{name}:"}
    client.conf.update(
        task_default_queue=name,
        broker_transport_options=prefix,
        result_backend_transport_options=prefix,
    )
    return client


def celery_results(
    proc: ServerProcess,
    client: Any,
    task: str,
    calls: list[list[Any]],
    timeout: float,
    warmup_args: Sequence[Any] = (),
) -> tuple[list[tuple[list[Any], Any]], list[str]]:
    """Run ``task`` once per argument list in ``calls``; (the (arguments, value) of each that
    succeeded, a line per failure), all within ``timeout``. A first call, with ``warmup_args``,
    waits up to 60 s for the worker to take tasks: it is not counted."""
    first = client.send_task(task, args=list(warmup_args))
    try:
        first.get(timeout=60, propagate=False)
    except Exception as exc:
        raise RuntimeError(f"no task ran: {exc}\n{proc.read_log()[-5000:]}") from exc
    sent = [(args, client.send_task(task, args=args)) for args in calls]
    done: list[tuple[list[Any], Any]] = []
    failures: list[str] = []
    deadline = time.monotonic() + timeout
    for args, result in sent:
        try:
            value = result.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False)
        except Exception as exc:  # celery's TimeoutError: the task never finished
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        if result.failed():
            failures.append(repr(value))
        else:
            done.append((args, value))
    return done, failures


def drop_redis_keys(url: str, name: str) -> None:
    """Remove every key a test's worker and client left under ``name:``."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
