"""A preloaded uWSGI app in a virtualenv without ``uwsgidecorators`` (issue 17 item 8: a distro
uWSGI serving a venv that lacks it).

    uwsgi --master --processes 2 --module fg_placement_uwsgi_app:application

``import uwsgidecorators`` is made to fail (``sys.modules["uwsgidecorators"] = None``) before
forkguard is imported. The user's own post-fork hook is set the plain way,
``uwsgi.post_fork_hook = ...``, before ``forkguard.install()``; it appends the worker's pid to
FG_HOOK_LOG. Then a connection is opened at import, in the master.

Environment: FG_DB_URL, FG_HOOK_LOG, FG_GUARD (1: ``forkguard.install()``, 0: nothing,
postfork: ``forkguard.install()`` inside the user's ``@postfork`` hook),
FG_BLOCK_DECORATORS (1, the default: block ``uwsgidecorators``; 0: the control, leave it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

if os.environ.get("FG_BLOCK_DECORATORS", "1") == "1":
    sys.modules["uwsgidecorators"] = None  # type: ignore[assignment]  # import raises ImportError

import sqlalchemy as sa
import uwsgi  # uWSGI's embedded module

import forkguard


def users_own_hook() -> None:
    with open(os.environ["FG_HOOK_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")


INSTALL_ERROR: str | None = None
if os.environ.get("FG_GUARD") == "postfork":
    # forkguard.install() inside the user's own @postfork hook (uwsgidecorators importable):
    # the hook must still run once per worker, not twice.
    from uwsgidecorators import postfork

    @postfork
    def users_hook_that_installs() -> None:
        users_own_hook()
        forkguard.install()

else:
    uwsgi.post_fork_hook = users_own_hook

if os.environ.get("FG_GUARD") == "1":
    try:
        forkguard.install()
    except Exception as exc:  # reported by every request: the server keeps serving
        INSTALL_ERROR = f"{type(exc).__name__}: {exc}"

try:
    import uwsgidecorators  # noqa: F401
except ImportError:
    DECORATORS_IMPORTABLE = False
else:
    DECORATORS_IMPORTABLE = True

url = os.environ["FG_DB_URL"]
SESSION_SQL = sa.text(
    {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}[
        sa.engine.make_url(url).get_backend_name()
    ]
)
engine = sa.create_engine(url)
with engine.connect() as conn:
    MASTER_SESSION = conn.execute(SESSION_SQL).scalar()
MASTER_PID = os.getpid()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    with engine.connect() as conn:
        session = conn.execute(SESSION_SQL).scalar()
    body = json.dumps(
        {
            "pid": os.getpid(),
            "master_pid": MASTER_PID,
            "session": session,
            "master_session": MASTER_SESSION,
            "install_error": INSTALL_ERROR,
            "decorators_importable": DECORATORS_IMPORTABLE,
            "stats": forkguard.stats() if os.environ.get("FG_GUARD") != "0" else None,
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
