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

import time
from dataclasses import dataclass, field
from typing import Any

from forkguard_lab.harness.load import LoadRun
from forkguard_lab.harness.prefork import AppServer
from forkguard_lab.harness.servers import DBServer

from ._cases import fresh_database
from ._harness import (
    WORKERS,
    Row,
    app_server,
    db_error_kinds,
    fd_count,
    lost_writes,
    measured,
    probe_workers,
    session_ids,
)
from ._inject import (
    Kill,
    after_kills,
    churn_under_load,
    kills_under_load,
    master_session,
    restart_under_load,
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
    out = restart_under_load(
        srv, case.server, time_cap=40, warmup=1.5, outage=1.0, until_recovered=_wait_recovered,
        before_stop=lambda: master_conn in session_ids(case.server),
    )  # fmt: skip
    answered, probe_failures = probe_workers(srv)
    live = set(srv.worker_pids())
    return _Restart(out.load, out.t_down, out.t_up, answered, live, probe_failures,
                    out.before_stop)  # fmt: skip


def restart(case: Case) -> Outcome:
    """Case 1 for one pairing: failures only inside the outage window, every worker answers
    afterwards, no acknowledged write lost."""
    dbname, url = fresh_database(case.server, case.driver)
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
    row = _row(
        case,
        "1 DB restart under load",
        broken,
        RESTART_WITHOUT,
        config=f"{GUARD_LABEL[case.guard]}, fsa3 app",
        load=f"{len(load.reqs)} req, 8 clients, echo/read/write",
        faults=f"1 restart, outage {run.t_up - run.t_down:.1f} s",
        survived=f"{len(run.answered)}/{len(run.live)} workers recovered",
        **measured(load, kinds, lost, t_case),
    )
    return Outcome(row, broken, _broken([(bool(failed), "the restart failed no request")]))


RESTART_WITHOUT = (
    "without forkguard the workers inherit the master's pooled session and use its socket at "
    "once: requests fail before the outage and a child closes the master's session (see the "
    "'(no forkguard)' rows)"
)


def _row(case: Case, title: str, broken: list[str], without: str, **columns: Any) -> Row:
    """A matrix row: the pairing's app server and driver, the case's title (marked for a twin),
    and the verdict and notes that the promises ``broken`` and ``without`` give."""
    return Row(case=title + case.suffix(), server=case.kind, db=case.label,
               verdict=_verdict(case, broken), notes=_notes(case, broken, without),
               **columns)  # fmt: skip


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
    kills: list[Kill]
    probe_failures: int
    master_alive: bool  # the master's session, at the end (no kill targets it)


def _kill_run(case: Case, srv: AppServer) -> _Kills:
    """Under load, kill the sessions of 2 random workers every 0.5 s until 10 kills have
    landed (capped at 20 s), then give every killed worker time for its next request."""
    master_conn = master_session(srv)
    _, probe_failures = probe_workers(srv)
    load, kills = kills_under_load(srv, case.server, load_cap=40, every=0.5, kill_cap=20.0,
                                   wanted=KILLS_WANTED)  # fmt: skip
    return _Kills(load, kills, probe_failures, master_conn in session_ids(case.server))


def kill(case: Case) -> Outcome:
    """Case 2 for one pairing: only a request in flight at a kill may fail; the next request
    on every killed worker succeeds. Protected runs use ``resilient=True``; the twin the
    user's own ``pool_pre_ping=True``, the same recovery without forkguard."""
    dbname, url = fresh_database(case.server, case.driver)
    t_case = time.monotonic()
    guard = "resilient" if case.protected else "off"
    with app_server(case.kind, url, case.workdir, guard=guard, style="fsa3",
                    pre_ping=not case.protected) as srv:  # fmt: skip
        run = _kill_run(case, srv)
        kinds = db_error_kinds(srv)
    lost = lost_writes(case.server, dbname, run.load.acknowledged)
    load, kills = run.load, run.kills
    unexplained, asked = after_kills(load, kills)
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
    row = _row(
        case,
        "2 server kills connections",
        broken,
        KILL_WITHOUT,
        config=config + ", fsa3 app",
        load=f"{len(load.reqs)} req, 6 clients",
        faults=f"{len(kills)} session kills",
        survived=f"next request OK on {served_after}/{len(asked)} killed workers",
        **measured(load, kinds, lost, t_case),
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


def _churn_run(case: Case, srv: AppServer) -> _Churn:
    """240 requests with ``max-requests 20`` while workers are SIGKILLed; fds and the master's
    session (recorded at import, before the fork) are read before and after."""
    master_conn = master_session(srv)
    probe_workers(srv)
    start_fds = {pid: fd_count(pid) for pid in srv.worker_pids()}
    master_fds = fd_count(srv.master_pid)
    load, kills = churn_under_load(srv, total=CHURN_REQUESTS, time_cap=60)
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
    dbname, url = fresh_database(case.server, case.driver)
    t_case = time.monotonic()
    with app_server(case.kind, url, case.workdir, guard=case.guard, style="fsa2",
                    max_requests=20) as srv:  # fmt: skip
        run = _churn_run(case, srv)
        kinds = db_error_kinds(srv)
    lost = lost_writes(case.server, dbname, run.load.acknowledged)
    broken = _churn_broken(run, sum(kinds.values()), lost)
    load = run.load
    pids_seen = {r.pid for r in load.reqs if r.pid}
    row = _row(
        case,
        "4 worker churn",
        broken,
        CHURN_WITHOUT,
        config=f"{GUARD_LABEL[case.guard]}, fsa2 app (the reported one), max-requests 20",
        load=f"{len(load.reqs)} req, 8 clients",
        faults=f"{run.kills} SIGKILLs + recycling: {len(pids_seen)} worker pids",
        survived=f"master session {'alive' if run.master_alive else 'CLOSED'}; fds/worker "
        f"{max(run.start_fds.values(), default=0)} -> {max(run.end_fds.values(), default=0)}",
        **measured(load, kinds, lost, t_case),
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
