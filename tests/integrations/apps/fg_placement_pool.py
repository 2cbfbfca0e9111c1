"""``multiprocessing.Pool(initializer=forkguard.install)``: forkguard installed in each worker,
after the fork, around an engine (or a Session) the parent opened "at import".

    python -m tests.integrations.apps.fg_placement_pool DRIVER engine|session install|none|parent

A fresh interpreter per run: forkguard is imported (the initializer names it) but never
installed in the parent, as in an app that only mentions it in ``Pool(initializer=...)``
(``install``), or not at all (``none``). ``parent``, the control, installs it in the parent
before the engine is made, the placement that has always worked.

* ``engine``: the parent checked a connection out and returned it to the pool; each task checks
  one out of the same engine.
* ``session``: the parent's ``Session`` is inside a transaction (``session.execute(select 1)``
  left open, Flask-SQLAlchemy 2 style), holding a checked-out connection; each task runs a
  query on that same session and closes it, as a request teardown would.

Prints one JSON object: the parent's session id before and after the pool, one reply per task
(worker pid, its session id, its ``forkguard.stats()`` and the forkguard log records it saw)
and any error.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import forkguard
from tests.conftest import URLS, session_id_sql
from tests.integrations.apps.fg_app_parts import ForkguardRecords

DRIVER, TARGET, GUARD = sys.argv[1:4] if __name__ == "__main__" else ("pymysql", "engine", "none")
PROCESSES = 2
TASKS = 6


records = ForkguardRecords()
logging.getLogger("forkguard").addHandler(records)
logging.getLogger("forkguard").setLevel(logging.INFO)

if GUARD == "parent":  # the control: installed in the parent, before the pool (and the engine)
    forkguard.install()

url = URLS[DRIVER]
SESSION_SQL = sa.text(session_id_sql(url))
engine = sa.create_engine(url)
session = Session(engine)
# "Import time": the parent's own connection, before any pool exists.
if TARGET == "engine":
    with engine.connect() as conn:
        PARENT_SESSION = conn.execute(SESSION_SQL).scalar()
else:
    session.execute(sa.text("SELECT 1"))  # a transaction left open: a checked-out connection
    PARENT_SESSION = session.execute(SESSION_SQL).scalar()


# One task at a time talks to the database: without forkguard the workers then share the
# parent's session cleanly (each answers with its id) instead of garbling one socket and hanging.
LOCK = multiprocessing.get_context("fork").Lock()


def task(i: int) -> dict[str, Any]:
    with LOCK:
        if TARGET == "engine":
            with engine.connect() as conn:
                sid = conn.execute(SESSION_SQL).scalar()
        else:
            try:
                sid = session.execute(SESSION_SQL).scalar()
            finally:
                session.close()  # a request teardown (Flask-SQLAlchemy's session.remove())
    time.sleep(0.05)  # let the other worker take a task too
    return {
        "pid": os.getpid(),
        "session": sid,
        "installed": forkguard.is_installed(),
        "stats": forkguard.stats() if GUARD != "none" else None,
        "log": records.mine(),
    }


def main() -> dict[str, Any]:
    out: dict[str, Any] = {"parent_pid": os.getpid(), "parent_session": PARENT_SESSION}
    ctx = multiprocessing.get_context("fork")
    initializer = forkguard.install if GUARD == "install" else None
    pool = ctx.Pool(PROCESSES, initializer=initializer)
    pending = [pool.apply_async(task, (i,)) for i in range(TASKS)]
    out["replies"], out["errors"] = [], []
    deadline = time.monotonic() + 15
    for result in pending:
        try:
            out["replies"].append(result.get(timeout=max(0.1, deadline - time.monotonic())))
        except Exception as exc:  # a worker stuck on, or broken by, a shared socket
            out["errors"].append(f"{type(exc).__name__}: {exc}")
    if any(not result.ready() for result in pending):
        pool.terminate()
    else:
        pool.close()
    pool.join()
    out["parent_installed"] = forkguard.is_installed()
    try:
        if TARGET == "engine":
            with engine.connect() as conn:
                out["parent_session_after"] = conn.execute(SESSION_SQL).scalar()
        else:
            out["parent_session_after"] = session.execute(SESSION_SQL).scalar()
            session.commit()
        out["parent_error"] = None
    except Exception as exc:
        out["parent_session_after"] = None
        out["parent_error"] = f"{type(exc).__name__}: {exc}"
    out["parent_log"] = records.mine()
    return out


if __name__ == "__main__":
    print(json.dumps(main(), default=repr))
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: nothing but the pool closes a connection
