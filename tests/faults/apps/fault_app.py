"""The reported app for the fault-injection suite: ``forkguard_lab.app`` plus fault hooks.

It shares :mod:`forkguard_lab.app`'s model, routes and error marker (all from
:mod:`forkguard_lab.views`, so :mod:`forkguard_lab.harness.logscan` counts its errors), and adds
what the fault cases need and the lab app has no hook for (see the report in
``docs/reliability.md``):

``FG_FAULTS_DB_URL``        the SQLAlchemy URL (required)
``FG_FAULTS_FORKGUARD``     ``off`` | ``on`` (``forkguard.install()``) |
                            ``resilient`` (``forkguard.install(resilient=True)``)
``FG_FAULTS_STYLE``         ``fsa2`` (the reported app: app context pushed at import, never
                            popped) or
                            ``fsa3`` (``with app.app_context(): configure_db()``)
``FG_FAULTS_PRE_PING``      ``1``: the user sets ``pool_pre_ping=True`` themselves
``FG_FAULTS_CONNECT_ARGS``  JSON for ``create_engine(connect_args=...)`` (TLS options)
``FG_FAULTS_ERROR_HANDLER`` ``rollback`` (default: log, roll the session back, answer 500) or
                            ``reported`` (log and answer 500, no rollback: the reported app has
                            no handler, so only its ``save()`` ever rolls the session back)

``FG_FAULTS_STYLE=fsa2`` with ``FG_FAULTS_ERROR_HANDLER=reported`` is the reported app: one
session for the worker's whole life, holding its connection in a transaction across requests.

Extra routes: ``/conn`` (this worker's DB session id and whether it runs over TLS) and
``/master`` (the master's pid and DB session id, recorded at import, before the fork).
"""

from __future__ import annotations

import json
import os
from typing import Any

DB_URL = os.environ.get("FG_FAULTS_DB_URL", "")
GUARD = os.environ.get("FG_FAULTS_FORKGUARD", "on")
STYLE = os.environ.get("FG_FAULTS_STYLE", "fsa2")
PRE_PING = os.environ.get("FG_FAULTS_PRE_PING", "") == "1"
CONNECT_ARGS: dict[str, Any] = json.loads(os.environ.get("FG_FAULTS_CONNECT_ARGS") or "{}")
ERROR_HANDLER = os.environ.get("FG_FAULTS_ERROR_HANDLER", "rollback")

if not DB_URL:
    raise RuntimeError("FG_FAULTS_DB_URL is not set")
if GUARD not in ("off", "on", "resilient"):
    raise RuntimeError(f"FG_FAULTS_FORKGUARD={GUARD!r}: expected off, on or resilient")
if ERROR_HANDLER not in ("rollback", "reported"):
    raise RuntimeError(f"FG_FAULTS_ERROR_HANDLER={ERROR_HANDLER!r}: expected rollback or reported")

if GUARD != "off":
    import forkguard

    if GUARD == "resilient":
        forkguard.install(resilient=True)
    else:
        forkguard.install()

from flask import Flask, jsonify  # noqa: E402 - forkguard.install() comes first
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy import text  # noqa: E402

from forkguard_lab import views  # noqa: E402

BACKEND = "mysql" if DB_URL.startswith("mysql") else "postgresql"
SESSION_ID_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}[
    BACKEND
]
TLS_SQL = {
    "mysql": "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
    "WHERE VARIABLE_NAME = 'Ssl_cipher'",
    "postgresql": "SELECT CASE WHEN ssl THEN cipher ELSE '' END FROM pg_stat_ssl "
    "WHERE pid = pg_backend_pid()",
}[BACKEND]

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = DB_URL
engine_options: dict[str, Any] = {}
if CONNECT_ARGS:
    engine_options["connect_args"] = CONNECT_ARGS
if PRE_PING:
    engine_options["pool_pre_ping"] = True
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options
_log_error = views.marker_logger(app)
db = SQLAlchemy(app, session_options={"expire_on_commit": False})
User = views.user_model(db, "fg_lab_users", _log_error)


def configure_db() -> tuple[int, str]:
    """The reported app's configure_db() (tables + one query at import); returns the session id."""
    db.create_all()
    User.query.filter(User.email == "nobody@fg-faults.invalid").scalar()
    conn_id = int(db.session.execute(text(SESSION_ID_SQL)).scalar() or 0)
    tls = str(db.session.execute(text(TLS_SQL)).scalar() or "")
    return conn_id, tls


MASTER_PID = os.getpid()
if STYLE == "fsa2":
    app.app_context().push()
    MASTER_CONN_ID, MASTER_TLS = configure_db()
elif STYLE == "fsa3":
    with app.app_context():
        MASTER_CONN_ID, MASTER_TLS = configure_db()
else:
    raise RuntimeError(f"FG_FAULTS_STYLE={STYLE!r}: expected fsa2 or fsa3")


def _rollback_after_error() -> None:
    """What any app must do after a DB error (the reported app has no handler: Flask answers 500
    and the session stays in its failed transaction until ``save()`` rolls it back)."""
    try:
        db.session.rollback()
    except Exception as again:
        _log_error("rollback", again)


# One marker line, then (unless the app is the reported one) roll the session back.
views.add_error_marker(
    app, _log_error, _rollback_after_error if ERROR_HANDLER == "rollback" else None
)
views.add_user_routes(app, db, User, lookup="query")


@app.get("/health")
def health() -> Any:
    return jsonify(pid=os.getpid())


@app.get("/conn")
def conn_info() -> Any:
    """This worker's DB session id and TLS cipher ('' without TLS)."""
    conn_id = int(db.session.execute(text(SESSION_ID_SQL)).scalar() or 0)
    tls = str(db.session.execute(text(TLS_SQL)).scalar() or "")
    views.hold(1.0)
    return jsonify(pid=os.getpid(), conn_id=conn_id, tls=tls)


@app.get("/master")
def master_info() -> Any:
    """What the master recorded at import (inherited by every worker through fork)."""
    return jsonify(
        pid=os.getpid(), master_pid=MASTER_PID, master_conn_id=MASTER_CONN_ID, master_tls=MASTER_TLS
    )


@app.get("/stats")
def fg_stats() -> Any:
    if GUARD == "off":
        return jsonify(pid=os.getpid())
    import forkguard

    return jsonify(pid=os.getpid(), **forkguard.stats())
