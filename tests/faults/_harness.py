"""Shared machinery for the fault-injection suite: app servers, the load it sends, server-side
checks and the results rows that become ``docs/reliability.md``.

The machinery itself is :mod:`forkguard_lab.harness` (private servers, the pre-fork server
process, the load client, error kinds from logs); what is this suite's own is here: the lab's
uWSGI / gunicorn command lines pointed at this suite's app module (``apps/fault_app.py``),
TLS certificates, session kills and the results rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

from forkguard_lab import ERROR_MARKER
from forkguard_lab.harness import load, logscan
from forkguard_lab.harness.load import LoadRun
from forkguard_lab.harness.load import Req as Req  # the fault tests' name for one request
from forkguard_lab.harness.prefork import AppServer
from forkguard_lab.harness.servers import DBServer, admin_execute
from forkguard_lab.runners import build_server

APPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
LAB_MODULE = "forkguard_lab.app:app"
# The private servers have TLS on; libpq's default sslmode=prefer would use it, so the cases
# that are not about TLS say "plain" explicitly (PyMySQL uses TLS only when asked).
PLAIN_CONNECT_ARGS: dict[str, dict[str, Any]] = {"postgresql": {"sslmode": "disable"}}
WORKERS = 4
# The 'decryption failed or bad record mac' / 'SSL SYSCALL error' family, as the drivers word it.
SSL_FAMILY = (
    "decryption failed",
    "bad record mac",
    "ssl syscall",
    "ssl error",
    "[ssl:",
    "sslerror",
    "unexpected eof while reading",
    "wrong version number",
    "record layer failure",
)


# --- TLS ----------------------------------------------------------------------------------


@dataclass
class Certs:
    dir: str
    ca: str
    cert: str
    key: str


def make_certs(directory: str, owner_uid: int = -1, owner_gid: int = -1) -> Certs:
    """A self-signed CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    os.chmod(directory, 0o755)

    def run(*argv: str) -> None:
        subprocess.run(
            ["openssl", *argv], cwd=directory, check=True, capture_output=True, timeout=60
        )

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=forkguard-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    with open(os.path.join(directory, "san.ext"), "w") as fh:
        fh.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
    certs = Certs(
        directory, *(os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key"))
    )
    for path in (certs.ca, certs.cert):
        os.chmod(path, 0o644)
    os.chmod(certs.key, 0o600)
    if owner_uid >= 0:
        os.chown(certs.key, owner_uid, owner_gid)
    return certs  # fmt: skip


# --- databases ------------------------------------------------------------------------------


def create_database(server: DBServer) -> str:
    """A fresh database on a private server, for one case."""
    name = f"fg_faults_{uuid.uuid4().hex[:10]}"
    server.execute_admin(f"CREATE DATABASE {name}")
    return name


def session_ids(server: DBServer) -> set[int]:
    """Ids of every live client session on the server (PROCESSLIST / pg_stat_activity)."""
    sql = (
        "SELECT ID FROM information_schema.PROCESSLIST"
        if server.kind == "mysql"
        else "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    return {int(r[0]) for r in admin_execute(server.kind, server.host, server.port,
                                             server.admin_user, sql)}  # fmt: skip


def kill_session(server: DBServer, conn_id: int) -> None:
    """Server-side kill of one client session (``KILL CONNECTION`` / ``pg_terminate_backend``)."""
    sql = (
        f"KILL CONNECTION {int(conn_id)}"
        if server.kind == "mysql"
        else f"SELECT pg_terminate_backend({int(conn_id)})"
    )
    try:
        server.execute_admin(sql)
    except Exception as exc:  # already gone (e.g. the worker just reconnected): not an error
        if "Unknown thread id" not in str(exc):
            raise


def stored_users(server: DBServer, database: str) -> dict[int, str]:
    rows = admin_execute(
        server.kind,
        server.host,
        server.port,
        server.admin_user,
        "SELECT id, email FROM fg_lab_users",
        database=database,
    )
    return {int(r[0]): str(r[1]) for r in rows}  # fmt: skip


def lost_writes(server: DBServer, database: str, acknowledged: Sequence[tuple[int, str]]) -> int:
    stored = stored_users(server, database)
    return sum(1 for wid, email in acknowledged if stored.get(wid) != email)


# --- app servers ----------------------------------------------------------------------------


@contextlib.contextmanager
def app_server(
    kind: str,
    db_url: str,
    workdir: str,
    *,
    guard: str = "on",
    style: str = "fsa2",
    max_requests: int = 100_000,
    pre_ping: bool = False,
    connect_args: Optional[dict[str, Any]] = None,
    extra_env: Optional[dict[str, str]] = None,
    start: bool = True,
) -> Iterator[AppServer]:
    """uWSGI or gunicorn (4 workers, preloaded) running ``apps/fault_app.py``; always stopped."""
    backend = "mysql" if db_url.startswith("mysql") else "postgresql"
    srv = build_server(kind, "none", db_url, workdir, max_requests=max_requests, style=style)
    srv.argv = [("fault_app:app" if a == LAB_MODULE else a) for a in srv.argv]
    srv.argv += ["--pythonpath", APPS_DIR]
    srv.env.update(
        FG_FAULTS_DB_URL=db_url,
        FG_FAULTS_FORKGUARD=guard,
        FG_FAULTS_STYLE=style,
        FG_FAULTS_PRE_PING="1" if pre_ping else "",
        FG_FAULTS_CONNECT_ARGS=json.dumps(
            connect_args if connect_args is not None else PLAIN_CONNECT_ARGS.get(backend, {})
        ),
    )
    for var in ("FORKGUARD_MODE", "FORKGUARD_TRACE", "FORKGUARD_FREEZE_GC"):
        srv.env.pop(var, None)
    srv.env.update(extra_env or {})
    try:
        if start:
            srv.start(timeout=45)
        yield srv
    finally:
        srv.stop()


def wait_workers(srv: AppServer, timeout: float = 5.0) -> list[int]:
    """The worker pids once all of them are up (a recycle wave may be in progress)."""
    deadline = time.monotonic() + timeout
    pids = srv.worker_pids()
    while len(pids) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = srv.worker_pids()
    return pids


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def db_error_kinds(srv: AppServer) -> Counter[str]:
    return logscan.scan(srv.read_log())


def ssl_family(log_text: str, *, marker_only: bool = True) -> int:
    """Failed requests (the app's one marker line each) whose error is of the TLS corruption
    family; ``marker_only=False`` counts every log line that mentions one (tracebacks too)."""
    n = 0
    for line in log_text.splitlines():
        if marker_only and ERROR_MARKER not in line:
            continue
        low = line.lower()
        n += any(s in low for s in SSL_FAMILY)
    return n


# --- load -----------------------------------------------------------------------------------


FAULT_OPS = ("echo", "read", "write")


def run_load(
    port: int,
    *,
    total: int,
    concurrency: int,
    time_cap: float,
    ops: Sequence[str] = FAULT_OPS,
    request_timeout: float = 8.0,
    **options: Any,
) -> LoadRun:
    """The harness's load with this suite's defaults: echo, read and write in turn, every read
    of a user this run wrote (once there is one), and every request in flight at the cap
    waited for (its failure or success is what a fault case counts)."""
    return load.run_load(
        port, total=total, concurrency=concurrency, time_cap=time_cap, ops=ops,
        request_timeout=request_timeout, known_read_share=1.0, grace=request_timeout + 5,
        **options,
    )  # fmt: skip


def probe_workers(srv: AppServer, *, time_cap: float = 40.0) -> tuple[set[int], int]:
    """Echo bursts until all workers are up and every one has answered 200; (pids that did,
    failures seen).

    Right after churn a recycled worker may still be dying and its replacement not yet forked
    (a busy 2-core machine makes that take seconds), so this waits for the full set.
    Each echo holds its worker 50 ms so that concurrent requests spread over all workers.
    """
    live = set(wait_workers(srv, 30.0))
    answered: set[int] = set()
    failures = 0
    deadline = time.monotonic() + time_cap
    while time.monotonic() < deadline and not (len(live) >= WORKERS and live <= answered):
        run = run_load(srv.port, total=WORKERS * 4, concurrency=WORKERS * 2, time_cap=5,
                       ops=("echo",), hold=0.05)  # fmt: skip
        answered |= {r.pid for r in run.reqs if r.status == 200 and r.pid is not None}
        failures += len(run.failed)
        live = set(srv.worker_pids()) or live
    return answered & live, failures


@dataclass
class Background:
    """A load running in its own thread while a case injects its fault."""

    load: LoadRun
    thread: threading.Thread


@contextlib.contextmanager
def background_load(port: int, *, join: float, **load_kwargs: Any) -> Iterator[Background]:
    """Run :func:`run_load` in a thread for the ``with`` block; on the way out, stop it and
    wait at most ``join`` seconds for the requests in flight (every case caps its waits)."""
    stop = threading.Event()
    run = LoadRun()
    kwargs = dict(port=port, stop=stop, run=run, **load_kwargs)
    thread = threading.Thread(target=run_load, kwargs=kwargs)
    thread.start()
    try:
        yield Background(run, thread)
    finally:
        stop.set()
        thread.join(join)


# --- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the reliability table."""

    case: str
    server: str
    db: str
    config: str
    load: str
    faults: str
    survived: str
    requests: int = 0
    errors: int = 0
    db_errors: str = "0"
    lost_writes: int = 0
    mismatches: int = 0
    seconds: float = 0.0
    verdict: str = "pass"
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measured(load: LoadRun, kinds: Counter[str], lost: int, t_case: float) -> dict[str, Any]:
    """The columns every load-driven row fills the same way: request and error counts, the DB
    errors in the logs, lost writes, mismatches, and the case's seconds since ``t_case``."""
    return dict(
        requests=len(load.reqs),
        errors=len(load.failed),
        db_errors=kinds_text(kinds),
        lost_writes=lost,
        mismatches=load.mismatches,
        seconds=round(time.monotonic() - t_case, 1),
    )


def kinds_text(kinds: Counter[str]) -> str:
    total = sum(kinds.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k} {v}" for k, v in kinds.most_common(4)) + ")"
