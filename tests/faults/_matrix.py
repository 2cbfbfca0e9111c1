"""The driver matrix of issue 20, item 3: restart, kill and churn for every driver on every
pre-fork server, shortened so that all of it fits in a few minutes.

Each scenario runs the same fault as the matching case of ``test_faults.py`` (cases 1, 2 and 4)
and returns an :class:`Outcome`: the report row plus the list of the case's promises the run
broke. Restart and kill add one promise to their originals, the one churn already has: the
master's import-time session (checked in to its pool, ``fsa3``) is not closed by a child.
With forkguard the list must be empty; the unprotected twins run the very same code with
``FG_FAULTS_FORKGUARD=off`` and must break at least one promise, which is how the matrix shows
that its checks can fail.

Shorter than the originals, on purpose: 1.5 s of load before a 1 s outage (case 1), kills
until 10 have landed (case 2), 240 requests instead of 2,000 under churn (case 4). Every wait
is capped; no check depends on how fast the machine is.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from forkguard_lab.harness.http import http_get
from forkguard_lab.harness.load import LoadRun, Req
from forkguard_lab.harness.prefork import AppServer
from forkguard_lab.harness.servers import DBServer

from ._harness import (
    WORKERS,
    Row,
    app_server,
    create_database,
    db_error_kinds,
    fd_count,
    kill_session,
    kinds_text,
    lost_writes,
    probe_workers,
    run_load,
    session_ids,
)

# SQLAlchemy driver name -> (server kind, label in the report).
DRIVERS: dict[str, tuple[str, str]] = {
    "pymysql": ("mysql", "MariaDB / PyMySQL"),
    "mysqldb": ("mysql", "MariaDB / mysqlclient"),
    "psycopg2": ("postgresql", "PostgreSQL / psycopg2"),
    "psycopg": ("postgresql", "PostgreSQL / psycopg 3"),
}
APP_SERVERS = ("uwsgi", "gunicorn")
GUARD_LABEL = {"on": "install()", "resilient": "install(resilient=True)", "off": "none"}
RESTART_GRACE = 3.0
CHURN_REQUESTS = 240


@dataclass
class Outcome:
    """One run of a scenario: its report row and the promises it broke (empty: all kept)."""

    row: Row
    broken: list[str] = field(default_factory=list)
    # The fault was not (sufficiently) injected: the run proves nothing either way.
    not_injected: list[str] = field(default_factory=list)


@dataclass
class Case:
    """What a scenario needs: the app server kind, the driver, the database, the guard."""

    kind: str
    driver: str
    server: DBServer
    workdir: str
    guard: str

    @property
    def protected(self) -> bool:
        return self.guard != "off"

    @property
    def label(self) -> str:
        return DRIVERS[self.driver][1]

    def suffix(self) -> str:
        return "" if self.protected else " (no forkguard)"


def _broken(checks: list[tuple[bool, str]]) -> list[str]:
    return [what for ok, what in checks if not ok]


# --- 1. database restart in the middle of load ------------------------------------------------


def master_session(srv: AppServer) -> int:
    """The DB session id the master recorded at import, before the fork (-1: no answer)."""
    _, master = http_get(srv.port, "/master")
    return int(master["master_conn_id"]) if isinstance(master, dict) else -1


@dataclass
class _Restart:
    load: LoadRun
    t_down: float
    t_up: float
    answered: set[int]
    live: set[int]
    probe_failures: int
    master_alive: bool  # the master's session, just before the server went down


def _wait_recovered(load: LoadRun, t_up: float) -> None:
    """Until 40 requests succeeded after the restart and the grace window is over (<= 15 s)."""
    deadline = t_up + 15.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        with load.lock:
            ok_after = sum(1 for r in load.reqs if r.status == 200 and r.t0 > t_up)
        if ok_after >= 40 and time.monotonic() > t_up + RESTART_GRACE + 0.5:
            return


def _restart_run(case: Case, srv: AppServer) -> _Restart:
    """1.5 s of load, the database stopped for ~1 s and started again, load until recovered."""
    master_conn = master_session(srv)
    stop = threading.Event()
    load = LoadRun()
    th = threading.Thread(
        target=run_load,
        kwargs=dict(port=srv.port, total=10**6, concurrency=8, time_cap=40, stop=stop,
                    run=load, request_timeout=6),
    )  # fmt: skip
    th.start()
    try:
        time.sleep(1.5)
        master_alive = master_conn in session_ids(case.server)
        t_down = time.monotonic()
        case.server.stop()
        time.sleep(1.0)
        case.server.start()
        t_up = time.monotonic()
        _wait_recovered(load, t_up)
    finally:
        stop.set()
        th.join(45)
    answered, probe_failures = probe_workers(srv)
    live = set(srv.worker_pids())
    return _Restart(load, t_down, t_up, answered, live, probe_failures, master_alive)


def restart(case: Case) -> Outcome:
    """Case 1 for one pairing: failures only inside the outage window, every worker answers
    afterwards, no acknowledged write lost."""
    dbname = create_database(case.server)
    url = case.server.url(case.driver, dbname)
    t_case = time.monotonic()
    with app_server(case.kind, url, case.workdir, guard=case.guard, style="fsa3") as srv:
        run = _restart_run(case, srv)
        kinds = db_error_kinds(srv)
    lost = lost_writes(case.server, dbname, run.load.acknowledged)
    load = run.load
    failed = load.failed
    outside = [r for r in failed if r.t1 < run.t_down or r.t0 > run.t_up + RESTART_GRACE]
    after_up = [r for r in failed if r.t0 > run.t_up]
    ok_after = sum(1 for r in load.reqs if r.status == 200 and r.t0 > run.t_up)
    broken = _broken([
        (not outside, f"{len(outside)} failures outside the outage window"),
        (len(after_up) <= WORKERS, f"{len(after_up)} failures after the restart (> 1/worker)"),
        (ok_after >= 40, f"only {ok_after} requests OK after the restart"),
        (run.answered == run.live and len(run.live) == WORKERS,
         f"{len(run.live - run.answered)} stuck workers"),
        (run.probe_failures == 0, f"{run.probe_failures} failed probes afterwards"),
        (run.master_alive, "the master's import-time session was closed before the restart"),
        (lost == 0, f"{lost} acknowledged writes lost"),
        (load.mismatches == 0, f"{load.mismatches} replies with another request's data"),
    ])  # fmt: skip
    row = Row(
        case="1 DB restart under load" + case.suffix(),
        server=case.kind,
        db=case.label,
        config=f"{GUARD_LABEL[case.guard]}, fsa3 app",
        load=f"{len(load.reqs)} req, 8 clients, echo/read/write",
        faults=f"1 restart, outage {run.t_up - run.t_down:.1f} s",
        survived=f"{len(run.answered)}/{len(run.live)} workers recovered",
        requests=len(load.reqs),
        errors=len(failed),
        db_errors=kinds_text(kinds),
        lost_writes=lost,
        mismatches=load.mismatches,
        seconds=round(time.monotonic() - t_case, 1),
        verdict=_verdict(case, broken),
        notes=_notes(case, broken, RESTART_WITHOUT),
    )
    return Outcome(row, broken, _broken([(bool(failed), "the restart failed no request")]))


RESTART_WITHOUT = (
    "without forkguard the workers inherit the master's pooled session and use its socket at "
    "once: requests fail before the outage and a child closes the master's session (see the "
    "'(no forkguard)' rows)"
)


def _verdict(case: Case, broken: list[str]) -> str:
    if case.protected:
        return "FAIL" if broken else "pass"
    return "reproduced" if broken else "not reproduced"


def _notes(case: Case, broken: list[str], without: str) -> str:
    """What the row proves: for a forkguard row, the promises kept and what breaks without
    it (it passes at main: nothing to fix there, it guards this driver/server pairing); for a
    twin, the promises it broke."""
    if not case.protected:
        return "broke: " + ("; ".join(broken) if broken else "nothing")
    if broken:
        return "broke: " + "; ".join(broken)
    return f"all promises kept (passes at main: a regression guard for this pairing); {without}"


# --- 2. the server kills the connections of random workers ------------------------------------

KILLS_WANTED = 10


@dataclass
class _Kills:
    load: LoadRun
    kills: list[tuple[int, float, float]]  # (worker pid, kill sent, kill returned)
    probe_failures: int
    master_alive: bool  # the master's session, at the end (no kill targets it)


def _latest_sessions(load: LoadRun, live: set[int]) -> dict[int, int]:
    """Each live worker's DB session id, as its latest ``/conn`` reply said."""
    latest: dict[int, int] = {}
    with load.lock:
        for r in load.reqs:
            if r.op == "conn" and r.status == 200 and r.pid and r.conn_id:
                latest[r.pid] = r.conn_id
    return {pid: conn for pid, conn in latest.items() if pid in live}


def _kill_run(case: Case, srv: AppServer) -> _Kills:
    """Under load, kill the sessions of 2 random workers every 0.5 s until 10 kills have
    landed (capped at 20 s), then give every killed worker time for its next request."""
    rng = random.Random(7)
    master_conn = master_session(srv)
    _, probe_failures = probe_workers(srv)
    stop = threading.Event()
    load = LoadRun()
    th = threading.Thread(
        target=run_load,
        kwargs=dict(port=srv.port, total=10**6, concurrency=6, time_cap=40, stop=stop,
                    run=load, ops=("conn", "echo", "read", "write", "conn", "echo")),
    )  # fmt: skip
    th.start()
    kills: list[tuple[int, float, float]] = []
    try:
        deadline = time.monotonic() + 20.0
        while len(kills) < KILLS_WANTED and time.monotonic() < deadline:
            time.sleep(0.5)
            latest = _latest_sessions(load, set(srv.worker_pids()))
            for pid in rng.sample(sorted(latest), min(2, len(latest))):
                sent = time.monotonic()
                kill_session(case.server, latest[pid])
                kills.append((pid, sent, time.monotonic()))
        time.sleep(1.5)
    finally:
        stop.set()
        th.join(40)
    return _Kills(load, kills, probe_failures, master_conn in session_ids(case.server))


def _after_kills(run: _Kills) -> tuple[list[Req], list[Req]]:
    """(failures no kill explains, each killed worker's first request after its kill).

    A failure is explained when a kill of its worker's session (of any worker's, for a bare
    500 without a pid) overlaps it: it was the request in flight at the kill.
    """

    def in_flight(r: Req) -> bool:
        return any(
            (r.pid is None or r.pid == p) and ks <= r.t1 and ke >= r.t0 for p, ks, ke in run.kills
        )

    unexplained = [r for r in run.load.failed if not in_flight(r)]
    nexts = [
        min((r for r in run.load.reqs if r.pid == p and r.t0 > ke), key=lambda r: r.t0,
            default=None)
        for p, _, ke in run.kills
    ]  # fmt: skip
    return unexplained, [r for r in nexts if r is not None]


def kill(case: Case) -> Outcome:
    """Case 2 for one pairing: only a request in flight at a kill may fail; the next request
    on every killed worker succeeds. Protected runs use ``resilient=True``; the twin the
    user's own ``pool_pre_ping=True``, the same recovery without forkguard."""
    dbname = create_database(case.server)
    url = case.server.url(case.driver, dbname)
    t_case = time.monotonic()
    guard = "resilient" if case.protected else "off"
    with app_server(case.kind, url, case.workdir, guard=guard, style="fsa3",
                    pre_ping=not case.protected) as srv:  # fmt: skip
        run = _kill_run(case, srv)
        kinds = db_error_kinds(srv)
    lost = lost_writes(case.server, dbname, run.load.acknowledged)
    load, kills = run.load, run.kills
    unexplained, asked = _after_kills(run)
    served_after = sum(r.status == 200 for r in asked)
    broken = _broken([
        (run.probe_failures == 0, f"{run.probe_failures} failed probes before any kill"),
        (run.master_alive, "the master's import-time session was closed"),
        (not unexplained, f"{len(unexplained)} failures not in flight at a kill"),
        (served_after == len(asked), f"next request failed on {len(asked) - served_after} "
         "killed workers"),
        (len(load.failed) <= len(kills), f"{len(load.failed)} failures for {len(kills)} kills"),
        (lost == 0, f"{lost} acknowledged writes lost"),
        (load.mismatches == 0, f"{load.mismatches} replies with another request's data"),
    ])  # fmt: skip
    config = GUARD_LABEL["resilient"] if case.protected else "none + user pool_pre_ping=True"
    row = Row(
        case="2 server kills connections" + case.suffix(),
        server=case.kind,
        db=case.label,
        config=config + ", fsa3 app",
        load=f"{len(load.reqs)} req, 6 clients",
        faults=f"{len(kills)} session kills",
        survived=f"next request OK on {served_after}/{len(asked)} killed workers",
        requests=len(load.reqs),
        errors=len(load.failed),
        db_errors=kinds_text(kinds),
        lost_writes=lost,
        mismatches=load.mismatches,
        seconds=round(time.monotonic() - t_case, 1),
        verdict=_verdict(case, broken),
        notes=_notes(case, broken, KILL_WITHOUT),
    )
    not_injected = _broken([
        (len(kills) >= 8, f"only {len(kills)} kills"),
        (len(asked) >= len(kills) // 2, f"only {len(asked)} killed workers asked again"),
    ])  # fmt: skip
    return Outcome(row, broken, not_injected)


KILL_WITHOUT = (
    "without forkguard, with the user's pool_pre_ping alone, the workers' first requests "
    "collide on the master's inherited session, and a child closes it (see the "
    "'(no forkguard)' rows)"
)


# --- 4. worker churn: SIGKILL and max-requests 20 ---------------------------------------------


@dataclass
class _Churn:
    load: LoadRun
    kills: int
    master_conn: int
    master_alive: bool
    start_fds: dict[int, int]
    end_fds: dict[int, int]
    master_fds: tuple[int, int]
    answered: set[int]
    probe_failures: int


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


def _churn_run(case: Case, srv: AppServer) -> _Churn:
    """240 requests with ``max-requests 20`` while workers are SIGKILLed; fds and the master's
    session (recorded at import, before the fork) are read before and after."""
    master_conn = master_session(srv)
    probe_workers(srv)
    start_fds = {pid: fd_count(pid) for pid in srv.worker_pids()}
    master_fds = fd_count(srv.master_pid)
    stop = threading.Event()
    load = LoadRun()
    th = threading.Thread(
        target=run_load,
        kwargs=dict(port=srv.port, total=CHURN_REQUESTS, concurrency=8, time_cap=60,
                    stop=stop, run=load),
    )  # fmt: skip
    th.start()
    try:
        kills = _sigkill_while(th, srv)
    finally:
        stop.set()
        th.join(30)
    answered, probe_failures = probe_workers(srv)
    return _Churn(
        load, kills, master_conn, master_conn in session_ids(case.server), start_fds,
        {pid: fd_count(pid) for pid in srv.worker_pids()},
        (master_fds, fd_count(srv.master_pid)), answered, probe_failures,
    )  # fmt: skip


def _churn_broken(run: _Churn, kinds_total: int, lost: int) -> list[str]:
    load = run.load
    bad = [r for r in load.failed if r.status != 0]  # 0: died with its SIGKILLed worker
    fd_bound = max(run.start_fds.values(), default=0) + 1
    end_fd_max = max(run.end_fds.values(), default=0)
    return _broken([
        (len(load.reqs) == CHURN_REQUESTS, f"load stopped early at {len(load.reqs)} requests"),
        (run.master_alive, "the master's import-time session was closed by a child"),
        (not bad, f"{len(bad)} requests answered with an error"),
        (len(load.failed) <= run.kills, f"{len(load.failed)} failures for {run.kills} SIGKILLs"),
        (kinds_total == 0, f"{kinds_total} DB errors in the log"),
        (bool(run.end_fds) and end_fd_max <= fd_bound, f"fds per worker up to {end_fd_max}"),
        (run.master_fds[0] == run.master_fds[1],
         f"master fds {run.master_fds[0]} -> {run.master_fds[1]}"),
        (run.probe_failures == 0 and len(run.answered) == WORKERS,
         f"{run.probe_failures} failed probes, {len(run.answered)} workers answered"),
        (lost == 0, f"{lost} acknowledged writes lost"),
        (load.mismatches == 0, f"{load.mismatches} replies with another request's data"),
    ])  # fmt: skip


def churn(case: Case) -> Outcome:
    """Case 4 for one pairing, the reported app (session checked out at import): the master's
    session outlives every child, no request is answered with an error, fds stay bounded."""
    dbname = create_database(case.server)
    url = case.server.url(case.driver, dbname)
    t_case = time.monotonic()
    with app_server(case.kind, url, case.workdir, guard=case.guard, style="fsa2",
                    max_requests=20) as srv:  # fmt: skip
        run = _churn_run(case, srv)
        kinds = db_error_kinds(srv)
    lost = lost_writes(case.server, dbname, run.load.acknowledged)
    broken = _churn_broken(run, sum(kinds.values()), lost)
    load = run.load
    pids_seen = {r.pid for r in load.reqs if r.pid}
    row = Row(
        case="4 worker churn" + case.suffix(),
        server=case.kind,
        db=case.label,
        config=f"{GUARD_LABEL[case.guard]}, fsa2 app (the reported one), max-requests 20",
        load=f"{len(load.reqs)} req, 8 clients",
        faults=f"{run.kills} SIGKILLs + recycling: {len(pids_seen)} worker pids",
        survived=f"master session {'alive' if run.master_alive else 'CLOSED'}; fds/worker "
        f"{max(run.start_fds.values(), default=0)} -> {max(run.end_fds.values(), default=0)}",
        requests=len(load.reqs),
        errors=len(load.failed),
        db_errors=kinds_text(kinds),
        lost_writes=lost,
        mismatches=load.mismatches,
        seconds=round(time.monotonic() - t_case, 1),
        verdict=_verdict(case, broken),
        notes=_notes(case, broken, CHURN_WITHOUT),
    )
    not_injected = _broken([
        (len(pids_seen) > 2 * WORKERS, f"only {len(pids_seen)} worker pids: no recycling"),
        (run.master_conn > 0, "the master recorded no session"),
    ])  # fmt: skip
    return Outcome(row, broken, not_injected)


CHURN_WITHOUT = (
    "without forkguard every worker uses the master's checked-out session: requests are "
    "answered with errors and a dying child can close it (see the '(no forkguard)' row)"
)
