"""Helpers for the recovery cases on the reported app: the server-side faults that kill a
worker's session while it idles (idle expiry, ``KILL``, a restart) and a per-worker account of
the failures that follow.

Why per worker: the reported app's session keeps one connection checked out for the worker's
whole life, so a dead session costs each worker its own run of failed requests; the totals
alone do not say whether a worker recovered or stayed stuck.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from forkguard_lab.harness.load import LoadRun
from forkguard_lab.harness.prefork import AppServer
from forkguard_lab.harness.servers import DBServer

from ._harness import WORKERS, kill_session, run_load, wait_workers

# The reported app: Flask-SQLAlchemy 2 style, and no error handler that rolls back.
REPORTED_ENV = {"FG_FAULTS_ERROR_HANDLER": "reported"}
# The idle-expiry cases (case 3 and its reported-app run) have the server drop sessions idle
# this long (s).
IDLE_TIMEOUT = 3


def set_idle_timeout(server: DBServer, seconds: Optional[int]) -> None:
    """Make the server drop idle sessions after ``seconds`` (``None``: back to the default).

    PostgreSQL has two knobs: ``idle_session_timeout`` (idle outside a transaction) and
    ``idle_in_transaction_session_timeout``; the reported app's session idles *inside* its
    transaction, so only the second one reaches it. Both are set, as an operator who wants idle
    sessions gone would; MariaDB's ``wait_timeout`` covers both.
    """
    if server.kind == "mysql":
        server.execute_admin(f"SET GLOBAL wait_timeout = {seconds or 28800}")
        return
    for knob in ("idle_session_timeout", "idle_in_transaction_session_timeout"):
        if seconds:
            server.execute_admin(f"ALTER SYSTEM SET {knob} = '{seconds}s'")
        else:
            server.execute_admin(f"ALTER SYSTEM RESET {knob}")
    server.execute_admin("SELECT pg_reload_conf()")


def worker_sessions(srv: AppServer, time_cap: float = 30.0) -> dict[int, int]:
    """Each worker's DB session id, from bursts of concurrent ``/conn`` requests (so that every
    worker gets some): in the reported app, the session the worker holds between requests."""
    want = set(wait_workers(srv, 30.0))
    found: dict[int, int] = {}
    deadline = time.monotonic() + time_cap
    while not want <= set(found) and time.monotonic() < deadline:
        run = run_load(srv.port, total=WORKERS * 4, concurrency=WORKERS * 2, time_cap=5,
                       ops=("conn",))  # fmt: skip
        found.update({r.pid: r.conn_id for r in run.reqs if r.status == 200 and r.pid
                      and r.conn_id})  # fmt: skip
    return {pid: conn for pid, conn in found.items() if pid in want}


def kill_worker_sessions(server: DBServer, sessions: dict[int, int]) -> int:
    for conn_id in sessions.values():
        kill_session(server, conn_id)
    return len(sessions)


@dataclass
class WorkerAccount:
    """How one worker fared after the fault."""

    failed: int = 0
    first_ok_after_failure: bool = False
    last_ok: bool = False


def per_worker(load: LoadRun) -> dict[int, WorkerAccount]:
    """Per worker pid: failed requests, and whether it answered 200 again afterwards."""
    by_pid: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for r in load.reqs:
        if r.pid is not None:
            by_pid[r.pid].append((r.t0, r.status))
    out: dict[int, WorkerAccount] = {}
    for pid, reqs in by_pid.items():
        reqs.sort()
        acc = WorkerAccount(failed=sum(s != 200 for _, s in reqs), last_ok=reqs[-1][1] == 200)
        seen_failure = False
        for _, status in reqs:
            seen_failure = seen_failure or status != 200
            if seen_failure and status == 200:
                acc.first_ok_after_failure = True
                break
        out[pid] = acc
    return out


def stuck_failures(accounts: dict[int, WorkerAccount]) -> int:
    """Failures beyond each worker's first: the price of a session left in a failed state."""
    return sum(max(0, a.failed - 1) for a in accounts.values())
