"""The faults that ``test_faults.py`` (cases 1, 2 and 4) and the driver matrix (``_matrix.py``)
inject the same way, with their own durations: a database restart under load, kills of
random workers' sessions under load, and SIGKILLs of random workers under load; plus the
reading of what the kills did.

One implementation, so that the matrix's shortened runs are the very fault the full cases
run, only shorter. Every wait is capped; no check depends on how fast the machine is.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

from forkguard_lab.harness.http import http_get
from forkguard_lab.harness.load import LoadRun, Req
from forkguard_lab.harness.prefork import AppServer
from forkguard_lab.harness.servers import DBServer

from ._harness import background_load, kill_session

Kill = tuple[int, float, float]  # (worker pid, kill sent, kill returned)
KILL_OPS = ("conn", "echo", "read", "write", "conn", "echo")


def master_session(srv: AppServer) -> int:
    """The DB session id the master recorded at import, before the fork (-1: no answer)."""
    _, master = http_get(srv.port, "/master")
    return int(master["master_conn_id"]) if isinstance(master, dict) else -1


# --- 1. database restart in the middle of load ------------------------------------------------


@dataclass
class Outage:
    """A restart under load: the load, when the server went down and came back, and what
    ``before_stop`` said just before it went down."""

    load: LoadRun
    t_down: float
    t_up: float
    before_stop: bool


def restart_under_load(
    srv: AppServer,
    server: DBServer,
    *,
    time_cap: float,
    warmup: float,
    outage: float,
    until_recovered: Callable[[LoadRun, float], None],
    before_stop: Callable[[], bool] = lambda: True,
) -> Outage:
    """8 clients of echo/read/write; after ``warmup`` s the database is stopped for ``outage``
    s and started again; the load goes on until ``until_recovered(load, t_up)`` returns."""
    with background_load(srv.port, join=45, total=10**6, concurrency=8, time_cap=time_cap,
                         request_timeout=6) as bg:  # fmt: skip
        time.sleep(warmup)
        checked = before_stop()
        t_down = time.monotonic()
        server.stop()
        time.sleep(outage)
        server.start()
        t_up = time.monotonic()
        until_recovered(bg.load, t_up)
    return Outage(bg.load, t_down, t_up, checked)


# --- 2. the server kills the connections of random workers ------------------------------------


def latest_sessions(load: LoadRun, live: set[int]) -> dict[int, int]:
    """Each live worker's DB session id, as its latest ``/conn`` reply said."""
    latest: dict[int, int] = {}
    with load.lock:
        for r in load.reqs:
            if r.op == "conn" and r.status == 200 and r.pid and r.conn_id:
                latest[r.pid] = r.conn_id
    return {pid: conn for pid, conn in latest.items() if pid in live}


def kills_under_load(
    srv: AppServer,
    server: DBServer,
    *,
    load_cap: float,
    every: float,
    kill_cap: float,
    wanted: int = 0,
) -> tuple[LoadRun, list[Kill]]:
    """6 clients (``/conn`` among the ops, so each worker's session is known); every ``every``
    s the sessions of 2 random workers are killed, for ``kill_cap`` s or until ``wanted`` kills
    (0: no such limit) have landed; then 1.5 s for every killed worker's next request."""
    rng = random.Random(7)
    kills: list[Kill] = []
    with background_load(srv.port, join=40, total=10**6, concurrency=6, time_cap=load_cap,
                         ops=KILL_OPS) as bg:  # fmt: skip
        deadline = time.monotonic() + kill_cap
        while (not wanted or len(kills) < wanted) and time.monotonic() < deadline:
            time.sleep(every)
            latest = latest_sessions(bg.load, set(srv.worker_pids()))
            for pid in rng.sample(sorted(latest), min(2, len(latest))):
                sent = time.monotonic()
                kill_session(server, latest[pid])
                kills.append((pid, sent, time.monotonic()))
        time.sleep(1.5)
    return bg.load, kills


def after_kills(load: LoadRun, kills: list[Kill]) -> tuple[list[Req], list[Req]]:
    """(failures no kill explains, each killed worker's first request after its kill).

    A failure is explained when a kill of its worker's session (of any worker's, for a bare
    500 without a pid) overlaps it: it was the request in flight at the kill. Any other
    failure is a request that came *after* a kill and should have succeeded.
    """

    def in_flight(r: Req) -> bool:
        return any(
            (r.pid is None or r.pid == p) and ks <= r.t1 and ke >= r.t0 for p, ks, ke in kills
        )

    unexplained = [r for r in load.failed if not in_flight(r)]
    nexts = [
        min((r for r in load.reqs if r.pid == p and r.t0 > ke), key=lambda r: r.t0, default=None)
        for p, _, ke in kills
    ]
    return unexplained, [r for r in nexts if r is not None]


# --- 4. worker churn: SIGKILL and max-requests ------------------------------------------------


def _sigkill_while(th: threading.Thread, srv: AppServer) -> int:
    """SIGKILL a random worker of ``srv`` every second while the load runs; how many."""
    rng = random.Random(11)
    kills = 0
    while th.is_alive():
        th.join(1.0)
        pids = srv.worker_pids()
        if th.is_alive() and pids:
            os.kill(rng.choice(pids), signal.SIGKILL)
            kills += 1
    return kills


def churn_under_load(srv: AppServer, *, total: int, time_cap: float) -> tuple[LoadRun, int]:
    """``total`` requests from 8 clients while a random worker is SIGKILLed every second:
    (the load, how many SIGKILLs)."""
    with background_load(srv.port, join=30, total=total, concurrency=8,
                         time_cap=time_cap) as bg:  # fmt: skip
        kills = _sigkill_while(bg.thread, srv)
    return bg.load, kills
