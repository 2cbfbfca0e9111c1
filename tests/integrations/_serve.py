"""Small helpers for the integration tests: free ports, server processes, a bounded load client.

Every process is started in its own session and stopped by process group (never by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from forkguard_lab.harness.commands import gunicorn_no_control_socket

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent
WORKERS = 4
NO_CONTROL_SOCKET = gunicorn_no_control_socket()
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(APPS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), **extra}


@dataclass
class Proc:
    """A subprocess in its own process group, its output in ``log``."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 8) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Workers that outlived their master (they share its group) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def get_json(url: str, timeout: float = 10) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:2000].decode(errors="replace")


def wait_http(proc: Proc, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get_json(url, timeout=5)
            return
        except OSError:
            if not proc.alive():
                raise RuntimeError(f"server died:\n{proc.output()[-5000:]}") from None
            time.sleep(0.2)
    raise RuntimeError(f"server did not answer {url}:\n{proc.output()[-5000:]}")


def every_worker(url: str, workers: int = WORKERS, timeout: float = 20) -> dict[int, Any]:
    """One successful reply per worker pid (sequential requests, until all answered)."""
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        try:
            status, body = get_json(f"{url}{'&' if '?' in url else '?'}token=probe", timeout=5)
        except OSError:
            continue
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
    """``threads`` x ``per_thread`` GETs of ``url?token=...``; ``check`` names a mismatch."""
    result = Load()
    lock = threading.Lock()
    end = time.monotonic() + deadline

    def failures() -> int:
        return len(result.errors) + len(result.mismatches)

    def worker() -> None:
        for _ in range(per_thread):
            if time.monotonic() > end:
                return
            if stop_after_failures is not None and failures() >= stop_after_failures:
                return
            token = uuid.uuid4().hex
            try:
                status, body = get_json(f"{url}?token={token}", timeout=timeout)
            except Exception as exc:
                status, body = -1, f"{type(exc).__name__}: {exc}"
            with lock:
                result.requests += 1
                if status != 200 or not isinstance(body, dict):
                    result.errors.append(f"{status}: {str(body)[:300]}")
                    continue
                problem = check(token, body)
                if problem:
                    result.mismatches.append(problem)
                else:
                    result.ok += 1
                    result.replies.append(body)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
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
        str(BIN / "celery"),
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


def drop_redis_keys(url: str, name: str) -> None:
    """Remove every key a test's worker and client left under ``name:``."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
