"""A minimal preloaded WSGI app: it queries the database at import, like the reported app's.

Served by the real uWSGI / gunicorn in tests/test_prefork_servers.py. FG_GUARD=1 installs
forkguard; under uWSGI a user post-fork hook records that it still runs (chained, not replaced).
"""

from __future__ import annotations

import gc
import json
import os

import sqlalchemy as sa

import forkguard

if os.environ.get("FG_GUARD") == "1":
    forkguard.install(freeze_gc=os.environ.get("FG_FREEZE") == "1")

try:
    from uwsgidecorators import postfork
except ImportError:  # not under uWSGI
    pass
else:

    @postfork
    def users_own_hook() -> None:
        with open(os.environ["FG_HOOK_LOG"], "a") as log:
            log.write(f"{os.getpid()}\n")


engine = sa.create_engine(os.environ["FG_DB_URL"])
with engine.connect() as conn:
    MASTER_SESSION = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
MASTER_PID = os.getpid()


def application(environ, start_response):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        session = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
    body = json.dumps(
        {
            "pid": os.getpid(),
            "master_pid": MASTER_PID,
            "session": session,
            "master_session": MASTER_SESSION,
            "stats": forkguard.stats(),
            "gc_freeze_count": gc.get_freeze_count(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
