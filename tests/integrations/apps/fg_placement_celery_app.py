"""A Celery app that opens a SQLAlchemy connection at import and calls ``forkguard.install()``
only in a ``worker_process_init`` handler: in each pool process, after the fork.

    celery -A fg_placement_celery_app worker --pool=prefork --concurrency 2

Environment: FG_DB_URL, FG_BROKER, FG_QUEUE, FG_KEYPREFIX, FG_GUARD (1: the handler calls
``forkguard.install()``; 0: the handler does nothing; import: the control, ``install()`` at
import in the master, before the engine, and the handler does nothing).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import sqlalchemy as sa
from celery.signals import worker_process_init

import forkguard
from tests.integrations.apps.fg_app_parts import ForkguardRecords, celery_worker_app

SESSION_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}


records = ForkguardRecords()
logging.getLogger("forkguard").addHandler(records)

if os.environ.get("FG_GUARD") == "import":
    forkguard.install()

engine = sa.create_engine(os.environ["FG_DB_URL"])
_session_sql = sa.text(SESSION_SQL[engine.url.get_backend_name()])
with engine.connect() as conn:  # the import-time connection, back in the pool afterwards
    MASTER_SESSION = conn.execute(_session_sql).scalar()
MASTER_PID = os.getpid()
INSTALL_LINE = 0  # the line of the install() call below, for the test to look for
INSTALL_ERROR: str | None = None


@worker_process_init.connect
def init_pool_process(**kwargs: Any) -> None:
    global INSTALL_LINE, INSTALL_ERROR
    if os.environ.get("FG_GUARD") != "1":
        return
    import sys

    INSTALL_LINE = sys._getframe().f_lineno + 2
    try:
        forkguard.install()
    except Exception as exc:
        INSTALL_ERROR = f"{type(exc).__name__}: {exc}"


app = celery_worker_app("fg_placement_celery_app")


@app.task(name="fg_placement_celery_app.session")
def session() -> dict[str, Any]:
    with engine.connect() as conn:
        sid = conn.execute(_session_sql).scalar()
    guarded = os.environ.get("FG_GUARD") in ("1", "import")
    return {
        "pid": os.getpid(),
        "session": sid,
        "master_session": MASTER_SESSION,
        "master_pid": MASTER_PID,
        "installed": forkguard.is_installed(),
        "install_error": INSTALL_ERROR,
        "install_site": f"{__file__}:{INSTALL_LINE}",
        "stats": forkguard.stats() if guarded else None,
        "log": records.mine(),
    }
