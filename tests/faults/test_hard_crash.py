"""Issue 20, item 2: a hard crash of the database under write load.

Case 1 stops the database gracefully. Here the private server's whole process group gets
SIGKILL mid-load (no shutdown, no goodbye to the clients: what the OOM killer or a power-cut
container does to the server processes), and is started again on the same data directory and
port, so it goes through crash recovery. Then:

* every worker recovers (answers again, and writes succeed after the restart);
* no write answered 200 is missing from the table;
* no write answered with an error is in the table, except a write whose COMMIT was in flight
  at the crash (the server may have made it durable and died before replying): those are
  counted separately as "in doubt", as are requests that got no answer at all.

"No acknowledged write lost" needs a server that keeps what it acknowledged across a process
crash: the session servers run with ``innodb_flush_log_at_trx_commit=2`` /
``synchronous_commit=on`` (see ``conftest.py``); the lab's throwaway defaults (0 / off) may
acknowledge a commit that a SIGKILL then loses.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from ._cases import DB_LABEL, DRIVER, PAIR_IDS, PAIRS, db_server, fresh_database
from ._crash import WriteLoad, audit, commit_durability, run_writes
from ._harness import (
    WORKERS,
    Row,
    app_server,
    db_error_kinds,
    kinds_text,
    probe_workers,
    stored_users,
)
from .conftest import Recorder

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll ``cond`` until true or ``timeout``: how long things take is not under test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.mark.parametrize(("kind", "backend"), PAIRS, ids=PAIR_IDS)
def test_database_sigkill_under_write_load(
    kind: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path, results: Recorder
) -> None:
    """SIGKILL the database mid-load, start it again: workers recover, no acknowledged write is
    lost, no refused write is committed (bar a COMMIT in flight at the crash, counted apart)."""
    server = db_server(request, backend)
    dbname, url = fresh_database(server, DRIVER[backend])
    setting, durable = commit_durability(server)
    assert durable, f"the server may lose acknowledged commits on a crash ({setting})"
    t_case = time.monotonic()
    with app_server(kind, url, str(tmp_path), guard="on", style="fsa3") as srv:
        probe_workers(srv)
        load, stop = WriteLoad(), threading.Event()
        th = threading.Thread(target=run_writes, args=(srv.port, load, stop),
                              kwargs=dict(clients=8, time_cap=60))  # fmt: skip
        th.start()
        try:
            _wait_for(lambda: load.ok_since(0.0) >= 40, 20.0)
            crash = (time.monotonic(), 0.0)
            server.stop(hard=True)
            crash = (crash[0], time.monotonic())
            time.sleep(1.0)
            server.start()
            t_up = time.monotonic()
            _wait_for(lambda: load.ok_since(t_up + 3.0) >= 40, 30.0)
        finally:
            stop.set()
            th.join(30)
        answered, probe_failures = probe_workers(srv)
        live = set(srv.worker_pids())
        kinds = db_error_kinds(srv)
    result = audit(load.writes, stored_users(server, dbname), crash)
    writes = load.writes
    failed = [w for w in writes if w.status != 200]
    after_up = [w for w in failed if w.t0 > t_up]
    ok_after = sum(w.status == 200 and w.t0 > t_up for w in writes)
    results.add(
        Row(
            case="1 DB crash (SIGKILL) under write load",
            server=kind,
            db=DB_LABEL[backend],
            config=f"install(), fsa3 app; server commit durability {setting}",
            load=f"{len(writes)} writes, 8 clients",
            faults=f"SIGKILL of the server's process group, restart {t_up - crash[0]:.1f} s later",
            survived=f"{len(answered)}/{len(live)} workers recovered; {ok_after} writes OK after",
            requests=len(writes),
            errors=len(failed),
            db_errors=kinds_text(kinds),
            lost_writes=len(result.lost),
            mismatches=0,
            seconds=round(time.monotonic() - t_case, 1),
            verdict="pass"
            if not result.lost
            and not result.behind_back
            and len(after_up) <= WORKERS
            and answered == live
            else "FAIL",
            notes=f"{result.acknowledged} acknowledged, {len(result.lost)} of them not in the "
            f"table; {result.refused} "
            f"answered with an error: {len(result.behind_back)} of them committed behind the "
            f"user's back, {len(result.in_doubt)} in doubt (COMMIT in flight at the crash, "
            f"committed); {result.no_reply} got no answer ({result.no_reply_committed} of them "
            f"committed); {len(after_up)} failed after the restart (<= 1 stale pooled "
            "connection per worker)",
        )
    )
    assert failed, "the crash failed no write: the fault was not injected"
    assert ok_after >= 40, f"only {ok_after} writes succeeded after the restart"
    assert not result.lost, f"acknowledged writes lost: {result.lost[:5]}"
    assert not result.behind_back, f"refused writes committed: {result.behind_back[:5]}"
    assert len(after_up) <= WORKERS, f"more than one failure per worker after up: {after_up}"
    assert answered == live and len(live) == WORKERS, f"stuck workers: {live - answered}"
    assert probe_failures == 0
