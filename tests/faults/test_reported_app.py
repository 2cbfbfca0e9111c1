"""Issue 20, item 1: the recovery faults on the *reported* app, with and without
``resilient=True``.

The reported app is Flask-SQLAlchemy 2 style (an app context pushed at import and never popped)
and has no error handler that rolls back: each worker keeps one session for its whole life, and
that session keeps its connection checked out, inside a transaction, across requests. The
fault cases in ``test_faults.py`` run the ``fsa3`` app with a rollback-on-error handler; these
run the reported one through the same three faults, each while the workers idle between two
loads (the "gone away after an idle spell" story of the report):

* idle expiry: ``wait_timeout`` / ``idle_in_transaction_session_timeout`` of 3 s;
* ``KILL CONNECTION`` / ``pg_terminate_backend`` on every worker's session;
* a database restart (stopped and started again, 1 s apart).

What they pin: pool pre-ping (``resilient=True``) checks a connection when it is *checked out*,
and this app never checks its connection back in, so pre-ping never runs: with or without it,
the first request on every worker fails with the disconnect, and the worker stays broken
(``Can't reconnect until invalid transaction is rolled back``) until a request that rolls the
session back - here the app's own ``save()`` - reaches it. The README's claim about
``resilient=True`` says exactly that; these tests fail if either half stops being true.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forkguard_lab.harness.servers import DBServer

from ._cases import DB_LABEL, DRIVER, PAIR_IDS, PAIRS, db_server, fresh_database
from ._harness import (
    WORKERS,
    Row,
    app_server,
    db_error_kinds,
    lost_writes,
    measured,
    probe_workers,
    run_load,
)
from ._recovery import (
    IDLE_TIMEOUT,
    REPORTED_ENV,
    kill_worker_sessions,
    per_worker,
    set_idle_timeout,
    stuck_failures,
    worker_sessions,
)
from .conftest import Recorder

pytestmark = [pytest.mark.faults, pytest.mark.slow]

GUARD_LABEL = {"resilient": "install(resilient=True)", "on": "install(), no pre-ping"}
LOAD_TOTAL = 240


def _inject(fault: str, server: DBServer, srv_sessions: dict[int, int]) -> str:
    """Break every worker's held session while the workers idle; describe what was done."""
    if fault == "idle":
        time.sleep(IDLE_TIMEOUT + 2.5)
        return f"{len(srv_sessions)} held sessions idled past a {IDLE_TIMEOUT} s timeout"
    if fault == "kill":
        return f"{kill_worker_sessions(server, srv_sessions)} held sessions killed"
    t0 = time.monotonic()
    server.stop()
    time.sleep(1.0)
    server.start()
    return f"1 restart (outage {time.monotonic() - t0:.1f} s)"


FAULT_CASE = {
    "idle": "3 idle expiry, reported app",
    "kill": "2 server kills connections, reported app",
    "restart": "1 DB restart, reported app",
}


@pytest.mark.parametrize("fault", ["idle", "kill", "restart"])
@pytest.mark.parametrize("guard", ["resilient", "on"])
@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_reported_app_recovery(
    kind: str,
    backend: str,
    guard: str,
    fault: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Recorder,
) -> None:
    """Every worker's held session dies while idle; then 240 requests (echo/read/write)."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    t_case = time.monotonic()
    if fault == "idle":
        set_idle_timeout(server, IDLE_TIMEOUT)
    try:
        with app_server(kind, url, str(tmp_path), guard=guard, style="fsa2",
                        extra_env=REPORTED_ENV) as srv:  # fmt: skip
            sessions = worker_sessions(srv)
            injected = _inject(fault, server, sessions)
            load = run_load(srv.port, total=LOAD_TOTAL, concurrency=8, time_cap=40)
            answered, probe_failures = probe_workers(srv)
            kinds = db_error_kinds(srv)
    finally:
        if fault == "idle":
            set_idle_timeout(server, None)
    lost = lost_writes(server, dbname, load.acknowledged)
    accounts = per_worker(load)
    failed = load.failed
    broken = sum(a.failed > 0 for a in accounts.values())
    recovered = sum(a.first_ok_after_failure for a in accounts.values())
    stuck = stuck_failures(accounts)
    results.add(
        Row(
            case=FAULT_CASE[fault],
            server=kind,
            db=DB_LABEL[backend],
            config=GUARD_LABEL[guard] + ", reported app (fsa2, no rollback handler)",
            load=f"{len(load.reqs)} req after the fault, 8 clients, echo/read/write",
            faults=injected,
            survived=f"{broken}/{len(accounts)} workers failed, {recovered} recovered "
            f"(after a save() rollback); all {len(answered)} answer at the end",
            **measured(load, kinds, lost, t_case),
            verdict="limitation measured" if broken else "FAIL (fault not seen)",
            notes=f"{len(failed)} failed requests: the first one per worker is the disconnect, "
            f"the other {stuck} are the session's failed transaction ('Can't reconnect until "
            "invalid transaction is rolled back') until a write's save() rolls it back"
            + (
                "; pre-ping never runs: the session never checks its connection back in"
                if guard == "resilient"
                else ""
            ),
        )
    )
    assert len(sessions) == WORKERS, f"not every worker reported its session: {sessions}"
    # Every worker holds its dead session: resilient=True or not, each one's first use fails.
    assert broken == len(accounts) == WORKERS, (load.statuses(), accounts)
    # ... and every worker recovers once a write's save() has rolled its session back.
    assert recovered == WORKERS, accounts
    assert len(answered) == WORKERS and probe_failures == 0
    assert lost == 0 and load.mismatches == 0
