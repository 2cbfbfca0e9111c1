"""A Celery app module that opens a SQLAlchemy connection at import, like many real ones.

    celery -A fg_celery_app worker --pool=prefork --concurrency 4

The worker's main process imports this module, then billiard forks the four pool processes:
each inherits the engine's pool with the master's connection in it. With ``FG_GUARD=1`` the
module calls ``forkguard.install()`` (or ``forkguard.celery.install()``) and nothing else:
no ``worker_process_init`` handler.

Environment: FG_DB_URL, FG_TABLE, FG_BROKER, FG_QUEUE, FG_KEYPREFIX, FG_GUARD
(1: ``forkguard.install()``, celery: ``forkguard.celery.install()``, 0: nothing).
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

import forkguard
from tests.integrations.apps.fg_app_parts import celery_worker_app

if os.environ.get("FG_GUARD") == "1":
    forkguard.install()
elif os.environ.get("FG_GUARD") == "celery":
    import forkguard.celery

    forkguard.celery.install()

SESSION_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}

engine = sa.create_engine(os.environ["FG_DB_URL"])
_session_sql = sa.text(SESSION_SQL[engine.url.get_backend_name()])
with engine.connect() as conn:  # the import-time connection, back in the pool afterwards
    MASTER_SESSION = conn.execute(_session_sql).scalar()
MASTER_PID = os.getpid()
TABLE = os.environ["FG_TABLE"]


app = celery_worker_app("fg_celery_app")


@app.task(name="fg_celery_app.write_and_read")
def write_and_read(token: str) -> dict[str, Any]:
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {TABLE} (token, pid) VALUES (:t, :p)"),
            {"t": token, "p": os.getpid()},
        )
    with engine.connect() as conn:
        session = conn.execute(_session_sql).scalar()
        row = conn.execute(sa.text(f"SELECT token FROM {TABLE} WHERE token = :t"), {"t": token})
        echoed = conn.execute(sa.text("SELECT :t"), {"t": token}).scalar()
        return {
            "pid": os.getpid(),
            "session": session,
            "master_session": MASTER_SESSION,
            "master_pid": MASTER_PID,
            "token": token,
            "row": row.scalar(),
            "echoed": echoed,
            "stats": forkguard.stats(),
        }
