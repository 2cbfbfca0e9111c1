"""Issue 7, cases 1-6: forkguard under real faults, with the reported app under uWSGI and
gunicorn (4 workers, preloaded) against private MariaDB and PostgreSQL servers.

Each case is bounded by its own deadlines (load time caps, request timeouts, server start
timeouts) and records one row of ``docs/reliability.md``. Pairings: uWSGI runs against
MariaDB (PyMySQL) and gunicorn against PostgreSQL (psycopg2), so every case covers both servers
and both databases.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab import ERROR_MARKER
from forkguard_lab.harness.load import LoadRun

from ._cases import DB_LABEL, DRIVER, PAIR_IDS, PAIRS, db_server, fresh_database
from ._harness import (
    SSL_FAMILY,
    WORKERS,
    Certs,
    Row,
    app_server,
    db_error_kinds,
    fd_count,
    lost_writes,
    measured,
    probe_workers,
    run_load,
    session_ids,
    ssl_family,
)
from ._inject import after_kills, churn_under_load, kills_under_load, restart_under_load
from ._recovery import IDLE_TIMEOUT, set_idle_timeout
from ._twins import Round, leaked_or_spent, merged, repeat_until, serve_and_load
from .conftest import Recorder

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CONFIG_LABEL = {
    "resilient": "install(resilient=True)",
    "pre_ping": "install() + user pool_pre_ping=True",
    "plain": "install(), no pre-ping",
}


def _recovery_kwargs(variant: str) -> dict[str, Any]:
    kwargs: dict[str, dict[str, Any]] = {
        "resilient": {"guard": "resilient"},
        "pre_ping": {"guard": "on", "pre_ping": True},
        "plain": {"guard": "on"},
    }
    return kwargs[variant]


# --- 1. database restart in the middle of load ----------------------------------------------


def _five_seconds(load: LoadRun, t_up: float) -> None:
    """Case 1 keeps the load on for 5 s after the restart (the matrix waits for recovery)."""
    time.sleep(5.0)


@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_database_restart_under_load(
    kind: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path, results: Recorder
) -> None:
    """Stop the database for ~2 s under load, start it again: every worker recovers (pool
    invalidation on the first disconnect error), failures only inside the outage window, every
    acknowledged write is still there."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    grace = 3.0
    t_case = time.monotonic()
    with app_server(kind, url, str(tmp_path), guard="on", style="fsa3") as srv:
        out = restart_under_load(srv, server, time_cap=30, warmup=3.0, outage=2.0,
                                 until_recovered=_five_seconds)  # fmt: skip
        load, t_down, t_up = out.load, out.t_down, out.t_up
        answered, probe_failures = probe_workers(srv)
        live = set(srv.worker_pids())
        kinds = db_error_kinds(srv)
    lost = lost_writes(server, dbname, load.acknowledged)
    failed = load.failed
    outside = [r for r in failed if r.t1 < t_down or r.t0 > t_up + grace]
    after_up = [r for r in failed if r.t0 > t_up]
    ok_after = sum(1 for r in load.reqs if r.status == 200 and r.t0 > t_up)
    results.add(
        Row(
            case="1 DB restart under load",
            server=kind,
            db=DB_LABEL[backend],
            config="install(), fsa3 app",
            load=f"{len(load.reqs)} req, 8 clients, echo/read/write",
            faults=f"1 restart, outage {t_up - t_down:.1f} s",
            survived=f"{len(answered)}/{len(live)} workers recovered",
            **measured(load, kinds, lost, t_case),
            verdict="pass" if not outside and lost == 0 and answered == live else "FAIL",
            notes=f"{len(failed)} failed requests, all inside the outage window "
            f"[stop, up + {grace:.0f} s]; {len(after_up)} after the server was back "
            f"(<= 1 stale pooled connection per worker); {ok_after} OK after it",
        )
    )
    assert failed, "the restart caused no failed request: the fault was not injected"
    assert not outside, f"failures outside the outage window: {outside[:5]}"
    assert len(after_up) <= WORKERS, f"more than one failure per worker after restart: {after_up}"
    assert ok_after > 50
    assert answered == live and len(live) == WORKERS, f"stuck workers: {live - answered}"
    assert probe_failures == 0
    assert lost == 0, f"{lost} acknowledged writes lost"
    assert load.mismatches == 0


# --- 2. the server kills the connections of random workers ------------------------------------


@pytest.mark.parametrize("variant", ["resilient", "pre_ping"])
@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_server_kills_worker_connections(
    kind: str,
    backend: str,
    variant: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Recorder,
) -> None:
    """``KILL CONNECTION`` / ``pg_terminate_backend`` on random workers' sessions under load:
    only a request in flight at the kill may fail; the next request on that worker succeeds."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    t_case = time.monotonic()
    with app_server(kind, url, str(tmp_path), style="fsa3", **_recovery_kwargs(variant)) as srv:
        probe_workers(srv)
        load, kills = kills_under_load(srv, server, load_cap=30, every=0.8, kill_cap=8.0)
        kinds = db_error_kinds(srv)
    lost = lost_writes(server, dbname, load.acknowledged)
    failed = load.failed
    # A request that *started* after its worker's session was killed must succeed; for each
    # kill, the first request its worker took after the kill returned.
    next_failed, asked = after_kills(load, kills)
    served_after = sum(r.status == 200 for r in asked)
    results.add(
        Row(
            case="2 server kills connections",
            server=kind,
            db=DB_LABEL[backend],
            config=CONFIG_LABEL[variant] + ", fsa3 app",
            load=f"{len(load.reqs)} req, 6 clients",
            faults=f"{len(kills)} session kills",
            survived=f"next request OK on {served_after}/{len(asked)} killed workers",
            **measured(load, kinds, lost, t_case),
            verdict="pass" if not next_failed and lost == 0 else "FAIL",
            notes=f"{len(failed)} failed requests were in flight when their session was "
            f"killed; {len(next_failed)} failures on a later request",
        )
    )
    assert len(kills) >= 8, "too few kills to prove anything"
    assert len(asked) >= len(kills) // 2, "killed workers were never asked again"
    assert served_after == len(asked), (
        f"next request failed after {len(asked) - served_after} kills"
    )
    assert not next_failed, f"a request after the kill failed: {next_failed[:5]}"
    assert len(failed) <= len(kills)
    assert lost == 0 and load.mismatches == 0


# --- 3. idle expiry: wait_timeout / idle_session_timeout ----------------------------------


@pytest.mark.parametrize("variant", ["resilient", "plain"])
@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_idle_expiry(
    kind: str,
    backend: str,
    variant: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Recorder,
) -> None:
    """The server drops idle sessions after 3 s; after idling past it, the next requests have
    zero errors with pre-ping (``resilient=True``, or the user's own ``pool_pre_ping``). The
    ``plain`` control shows the fault is real: without pre-ping the first requests fail."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    t_case = time.monotonic()
    set_idle_timeout(server, IDLE_TIMEOUT)
    try:
        with app_server(kind, url, str(tmp_path), style="fsa3", **_recovery_kwargs(variant)) as srv:
            answered, _ = probe_workers(srv)  # every worker now holds a pooled session
            time.sleep(IDLE_TIMEOUT + 2.5)
            load = run_load(srv.port, total=200, concurrency=8, time_cap=30)
            kinds = db_error_kinds(srv)
    finally:
        set_idle_timeout(server, None)
    lost = lost_writes(server, dbname, load.acknowledged)
    failed = load.failed
    control = variant == "plain"
    verdict = ("pass" if failed else "FAIL") if control else ("pass" if not failed else "FAIL")
    results.add(
        Row(
            case="3 idle expiry" + (" (control)" if control else ""),
            server=kind,
            db=DB_LABEL[backend],
            config=CONFIG_LABEL[variant] + ", fsa3 app",
            load=f"idle {IDLE_TIMEOUT + 2.5:.1f} s, then {len(load.reqs)} req, 8 clients",
            faults=f"{len(answered)} pooled sessions expired (timeout {IDLE_TIMEOUT} s)",
            survived=f"{len(load.reqs) - len(failed)}/{len(load.reqs)} requests OK",
            **measured(load, kinds, lost, t_case),
            verdict=verdict,
            notes="control: without pre-ping each worker's first request after the expiry "
            "fails ('gone away' / 'server closed the connection')"
            if control
            else "",
        )
    )
    assert len(answered) == WORKERS
    if control:
        assert failed, "no error without pre-ping: the idle timeout did not bite"
        assert len(failed) <= WORKERS * 2
    else:
        assert not failed, f"{len(failed)} errors after idle expiry: {load.statuses()}"
    assert lost == 0 and load.mismatches == 0


# --- 4. worker churn: SIGKILL and max-requests 20 ---------------------------------------------


@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_worker_churn(
    kind: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path, results: Recorder
) -> None:
    """2,000 requests with ``max-requests 20`` while random workers are SIGKILLed: new workers
    start clean, the master's connection outlives every child, fds per worker stay bounded."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    t_case = time.monotonic()
    with app_server(kind, url, str(tmp_path), guard="on", style="fsa2", max_requests=20) as srv:
        from forkguard_lab.harness.http import http_get

        status, master = http_get(srv.port, "/master")
        assert status == 200 and master["master_pid"] == srv.master_pid
        master_conn = int(master["master_conn_id"])
        assert master_conn in session_ids(server)
        probe_workers(srv)
        start_fds = {pid: fd_count(pid) for pid in srv.worker_pids()}
        master_fds = fd_count(srv.master_pid)
        load, kills = churn_under_load(srv, total=2000, time_cap=120)
        answered, probe_failures = probe_workers(srv)
        end_fds = {pid: fd_count(pid) for pid in srv.worker_pids()}
        master_fds_end = fd_count(srv.master_pid)
        master_alive = master_conn in session_ids(server)
        kinds = db_error_kinds(srv)
    lost = lost_writes(server, dbname, load.acknowledged)
    failed = load.failed
    pids_seen = {r.pid for r in load.reqs if r.pid}
    bad = [r for r in failed if r.status != 0]  # 0: the request died with its SIGKILLed worker
    fd_bound = max(start_fds.values()) + 1
    results.add(
        Row(
            case="4 worker churn",
            server=kind,
            db=DB_LABEL[backend],
            config="install(), fsa2 app (the reported one), max-requests 20",
            load=f"{len(load.reqs)} req, 8 clients",
            faults=f"{kills} SIGKILLs + recycling: {len(pids_seen)} worker pids",
            survived=f"master session {'alive' if master_alive else 'CLOSED'}; "
            f"fds/worker {max(start_fds.values())} -> {max(end_fds.values(), default=0)}",
            **measured(load, kinds, lost, t_case),
            verdict="pass" if master_alive and not bad and lost == 0 else "FAIL",
            notes=f"{len(failed)} requests died with their SIGKILLed worker (no reply), "
            f"{len(bad)} answered with an error; master fds {master_fds} -> {master_fds_end}",
        )
    )
    assert len(load.reqs) == 2000, f"load stopped early: {len(load.reqs)}"
    assert len(pids_seen) > 2 * WORKERS, "workers were not recycled"
    assert master_alive, "a child closed the master's inherited connection"
    assert not bad, f"requests answered with an error: {bad[:5]}"
    assert len(failed) <= kills
    assert sum(kinds.values()) == 0, kinds
    assert end_fds and max(end_fds.values()) <= fd_bound, (start_fds, end_fds)
    assert master_fds_end == master_fds
    assert probe_failures == 0 and len(answered) == WORKERS
    assert lost == 0 and load.mismatches == 0


# --- 5. TLS ---------------------------------------------------------------------------------

# The unprotected twins repeat whole rounds (a fresh server each) until the hazard shows, at
# most this many rounds / seconds: see ``_twins.py``.
TWIN_ROUNDS = 6
TWIN_TIME_CAP = 75.0


@pytest.mark.parametrize("guard", ["on", "off"], ids=["forkguard", "unprotected"])
@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_tls(
    kind: str,
    backend: str,
    guard: str,
    certs: Certs,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Recorder,
) -> None:
    """Drivers on TLS, the reported app: with forkguard no SSL error of the 'decryption failed
    or bad record mac' family and no error at all; without it, failed requests whose error is
    of that family (rounds of a fresh server until one shows it)."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    connect_args = {"ssl": {"ca": certs.ca}} if backend == "mysql" else {"sslmode": "require"}
    protected = guard == "on"
    t_case = time.monotonic()

    def one_round(n: int) -> Round:
        return serve_and_load(kind, url, str(tmp_path / f"round{n}"), guard=guard,
                              connect_args=connect_args,
                              load_kwargs=dict(total=600, concurrency=16, time_cap=25,
                                               request_timeout=6))  # fmt: skip

    rounds = repeat_until(one_round, lambda r: protected or ssl_family(r.log_text) > 0,
                          rounds=TWIN_ROUNDS, time_cap=TWIN_TIME_CAP)  # fmt: skip
    load, kinds, log_text = merged(rounds)
    lost = lost_writes(server, dbname, load.acknowledged)
    failed = load.failed
    ssl_errors = ssl_family(log_text)
    ssl_anywhere = ssl_family(log_text, marker_only=False)
    masters = [r.master for r in rounds]
    results.add(
        Row(
            case="5 TLS" + ("" if protected else " (no forkguard)"),
            server=kind,
            db=DB_LABEL[backend] + " over TLS",
            config=("install()" if protected else "none") + ", fsa2 app (the reported one)",
            load=f"{len(load.reqs)} req, 16 clients"
            + ("" if protected else f", {len(rounds)} round(s) of a fresh server"),
            faults="connection inherited over TLS",
            survived=f"{ssl_errors} failed requests of the SSL family",
            **measured(load, kinds, lost, t_case),
            verdict=("pass" if not failed and not sum(kinds.values()) and not ssl_anywhere
                     else "FAIL")
            if protected
            else ("reproduced (SSL family)" if ssl_errors else "FAIL: not reproduced"),
            notes=f"every session on TLS (master: {(masters[0] or {}).get('master_tls')}); "
            + (
                f"SSL-family errors seen: {', '.join(_ssl_messages(log_text)) or 'none'}"
                if not protected
                else "no SSL-family error anywhere in the log"
            ),
        )
    )  # fmt: skip
    assert all(m and m["master_tls"] for m in masters), "the master's connection is not on TLS"
    if protected:
        assert ssl_anywhere == 0, "an SSL error of the corruption family in the server log"
        assert not failed and sum(kinds.values()) == 0, (load.statuses(), kinds)
        assert lost == 0 and load.mismatches == 0
    else:
        assert ssl_errors > 0, (
            f"no failed request of the SSL family without forkguard in {len(rounds)} rounds: "
            f"{load.statuses()}, {kinds}"
        )


def _ssl_messages(log_text: str) -> list[str]:
    """The distinct SSL-family messages of failed requests, shortened for the table."""
    found: dict[str, None] = {}
    for line in log_text.splitlines():
        low = line.lower()
        if ERROR_MARKER in line and any(s in low for s in SSL_FAMILY):
            for msg in (
                "decryption failed or bad record mac",
                "SSL SYSCALL error: EOF detected",
                "SSL SYSCALL error",
                "SSL error",
            ):
                if msg.lower() in low:
                    found[msg] = None
                    break
    return list(found)


# --- 6. cross-process data leak: echo, 64 clients, 10,000 requests ---------------------------

# A round shows a leak only sometimes (on MariaDB/PyMySQL about one in two or three; CI once
# saw none in 6 rounds), and each round ends soon after its first error (``leaked_or_spent``),
# so the unprotected twin affords many short rounds.
ECHO_TWIN_ROUNDS = 30
ECHO_TWIN_TIME_CAP = 120.0


@pytest.mark.parametrize("guard", ["on", "off"], ids=["forkguard", "unprotected"])
@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_echo_leak(
    kind: str,
    backend: str,
    guard: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Recorder,
) -> None:
    """Every echo must come back with the client's own token: 0 mismatches in 10,000 requests
    with forkguard; without it, mismatches (another request's data), in rounds of a fresh server
    and 64 clients, each stopped at its first mismatch or 1 s after its first error."""
    _, url = fresh_database(db_server(request, backend), DRIVER[backend])
    protected = guard == "on"
    total = 10_000 if protected else 1_280
    t_case = time.monotonic()

    def one_round(n: int) -> Round:
        return serve_and_load(
            kind, url, str(tmp_path / f"round{n}"), guard=guard,
            load_kwargs=dict(total=total, concurrency=64, ops=("echo",),
                             time_cap=90 if protected else 12, request_timeout=6),
            stop_when=None if protected else leaked_or_spent,
        )  # fmt: skip

    rounds = repeat_until(one_round, lambda r: protected or r.load.mismatches > 0,
                          rounds=ECHO_TWIN_ROUNDS, time_cap=ECHO_TWIN_TIME_CAP)  # fmt: skip
    load, kinds, _ = merged(rounds)
    failed = load.failed
    leaky = sum(r.load.mismatches > 0 for r in rounds)
    results.add(
        Row(
            case="6 echo leak" + ("" if protected else " (no forkguard)"),
            server=kind,
            db=DB_LABEL[backend],
            config=("install()" if protected else "none") + ", fsa2 app (the reported one)",
            load=f"{len(load.reqs)} echo req, 64 clients"
            + (" (time cap)" if load.timed_out else "")
            + ("" if protected else f", {len(rounds)} round(s) of a fresh server"),
            faults="connection inherited by 4 workers",
            survived=f"{load.ok} OK",
            **measured(load, kinds, 0, t_case),
            verdict=("pass" if load.mismatches == 0 and not failed else "FAIL")
            if protected
            else (f"reproduced: {load.mismatches} leaks" if load.mismatches
                  else "FAIL: not reproduced"),
            notes="" if protected else f"{leaky} of {len(rounds)} rounds showed a mismatch; "
            "each unprotected round stops at its first one, or 1 s after its first error",
        )
    )  # fmt: skip
    if protected:
        assert len(load.reqs) == total, f"only {len(load.reqs)} requests in the time cap"
        assert load.mismatches == 0
        assert not failed and sum(kinds.values()) == 0, (load.statuses(), kinds)
    else:
        assert load.mismatches > 0, (
            f"no cross-process mismatch without forkguard in {len(rounds)} rounds of 64 clients: "
            f"{load.statuses()}, {kinds}"
        )
