"""The app from the bug report, rebuilt: Flask + Flask-SQLAlchemy written the way its author did.

This module is what uWSGI (``--module forkguard_lab.app:app``) and gunicorn
(``forkguard_lab.app:app``) load. Everything is decided by environment variables so the very
same file runs every cell of the lab:

``FORKGUARD_LAB_DB_URL``    the SQLAlchemy URL (required; the lab makes one database per cell)
``FORKGUARD_LAB_STRATEGY``  one of :data:`STRATEGIES` (default ``none``)
``FORKGUARD_LAB_STYLE``     ``fsa2`` (default) or ``fsa3``, how the import-time setup runs:

* ``fsa2`` - the reported app targets Flask-SQLAlchemy 2, where ``db.create_all()`` and queries
  work at import with no app context. In Flask-SQLAlchemy 3's API that means pushing an app
  context at import and never popping it, so the scoped session keeps its connection checked
  out in a transaction - in the master, and in every worker forked from it. That inherited
  connection is what breaks the reported app.
* ``fsa3`` - the modern idiom, ``with app.app_context(): configure_db()``: the connection goes
  back to the pool, and the master holds a pooled (checked-in) connection.

``FORKGUARD_LAB_CLIENT_URL`` / ``FORKGUARD_LAB_CLIENT_CA``: the ``--clients`` variant. The app
also builds a ``requests.Session`` at import, calls that HTTPS API once there, and again in
every ``/echo``: the master's keep-alive connection is inherited like its database connection.

``FORKGUARD_LAB_INSTALL_AT``, where strategy ``forkguard`` calls ``forkguard.install()``:
``import`` (default, at the top, before any engine exists) or ``postfork`` (in the server's
post-fork hook, in every worker, after the master made its engine and connection). With
``postfork`` the hook is registered for every strategy and does only that strategy's own work,
so ``none`` is the same placement with a hook that does nothing.

Why the app logs its own one-line error marker: the lab counts DB error kinds from the server
logs, and one marker per failed request is exact where counting traceback lines is not.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from forkguard_lab import STRATEGIES

STRATEGY = os.environ.get("FORKGUARD_LAB_STRATEGY", "none")
STYLE = os.environ.get("FORKGUARD_LAB_STYLE", "fsa2")
DB_URL = os.environ.get("FORKGUARD_LAB_DB_URL", "")
INSTALL_AT = os.environ.get("FORKGUARD_LAB_INSTALL_AT", "import")
INSTALL_PLACES = ("import", "postfork")

if STRATEGY not in STRATEGIES:
    raise RuntimeError(f"FORKGUARD_LAB_STRATEGY={STRATEGY!r}: expected one of {STRATEGIES}")
if INSTALL_AT not in INSTALL_PLACES:
    raise RuntimeError(f"FORKGUARD_LAB_INSTALL_AT={INSTALL_AT!r}: expected one of {INSTALL_PLACES}")
if not DB_URL:
    raise RuntimeError("FORKGUARD_LAB_DB_URL is not set (the lab sets it for every cell)")

if STRATEGY == "forkguard":
    # The fix under test, used the way a user would: imported at the top and, by default,
    # installed before any engine exists (else in the post-fork hook, see run_postfork_hook).
    import forkguard

    if INSTALL_AT == "import":
        forkguard.install()

from flask import Flask, jsonify  # noqa: E402 - forkguard.install() must come first
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy.orm import close_all_sessions  # noqa: E402

from forkguard_lab import views  # noqa: E402

# What real apps hold from import on (caches, lookup tables, config): a modest read-only working
# set, so that what preloading shares, and lazy-apps duplicates in every worker, is visible.
DATA_MB = int(os.environ.get("FORKGUARD_LAB_DATA_MB", "32"))
CATALOG = [(f"catalog-item-{i:08d}", i, i / 7.0) for i in range(DATA_MB * 1024 * 1024 // 160)]

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = DB_URL
_log_error = views.marker_logger(app)
db = SQLAlchemy(app, session_options={"expire_on_commit": False})
User = views.user_model(db, "fg_lab_users", _log_error)


class Campaign(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fg_lab_campaigns"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(100), nullable=False)
    owner_id = db.Column(db.Integer, db.ForeignKey("fg_lab_users.id"), nullable=True)


def configure_db() -> None:
    """The reported app's configure_db(): create the tables and run one query, at import."""
    db.create_all()
    User.query.filter(User.email == "nobody@fg-lab.invalid").scalar()


if STYLE == "fsa2":
    app.app_context().push()
    configure_db()
elif STYLE == "fsa3":
    with app.app_context():
        configure_db()
else:
    raise RuntimeError(f"FORKGUARD_LAB_STYLE={STYLE!r}: expected fsa2 or fsa3")

# Log one marker line and answer 500, as Flask does without a handler (see views).
views.add_error_marker(app, _log_error)
# The --clients variant: an HTTP API called through a session built (and used) at import.
CLIENT_URL = os.environ.get("FORKGUARD_LAB_CLIENT_URL")
remote = views.RemoteApi(CLIENT_URL, os.environ["FORKGUARD_LAB_CLIENT_CA"]) if CLIENT_URL else None
# /echo, /user (GET: User.query, or db.session.query with ?flavor=session; POST: save()).
views.add_user_routes(app, db, User, lookup="flavor", remote=remote)


@app.get("/health")
def health() -> Any:
    """Readiness probe: answers without touching the database."""
    views.hold(1.0)
    return jsonify(pid=os.getpid(), strategy=STRATEGY)


@app.get("/stats")
def fg_stats() -> Any:
    """forkguard's counters in this worker (empty for the other strategies)."""
    if STRATEGY != "forkguard":
        return jsonify(pid=os.getpid(), install_at=INSTALL_AT)
    import forkguard

    return jsonify(pid=os.getpid(), install_at=INSTALL_AT, **forkguard.stats())


# --- post-fork hooks: the user's two fixes and SQLAlchemy's recipe ----------------------------


def _dispose() -> None:
    """The user's first fix: ``@postfork def reset(): db.engine.dispose()``."""
    with app.app_context():
        db.engine.dispose()


def _close_all_and_dispose() -> None:
    """The user's second fix: close every session, dispose of the engine, new scoped session.

    Spelled in Flask-SQLAlchemy 3's API, which the lab runs: the user's
    ``db.session.close_all()`` is ``sqlalchemy.orm.close_all_sessions()`` there, and
    ``db.create_scoped_session()`` is ``db._make_scoped_session(options)``.
    """
    with app.app_context():
        close_all_sessions()
        db.engine.dispose()
        db.session = db._make_scoped_session({"expire_on_commit": False})


def _dispose_noclose() -> None:
    """SQLAlchemy's documented recipe: ``engine.dispose(close=False)`` in the child."""
    with app.app_context():
        db.engine.dispose(close=False)


POSTFORK_HOOKS: dict[str, Callable[[], None]] = {
    "dispose": _dispose,
    "close-all-and-dispose": _close_all_and_dispose,
    "dispose-noclose": _dispose_noclose,
}


def run_postfork_hook() -> None:
    """Run this strategy's post-fork hook (gunicorn's ``post_fork`` calls this).

    With ``FORKGUARD_LAB_INSTALL_AT=postfork``, strategy ``forkguard`` installs forkguard here,
    in the worker, as a user who put the call in the hook would.

    Exceptions propagate, as in the reported app's hook: uWSGI prints the traceback and carries
    on, gunicorn fails the worker's boot. Both print the traceback, which the lab counts.
    """
    if STRATEGY == "forkguard" and INSTALL_AT == "postfork":
        import forkguard

        forkguard.install()
    hook: Optional[Callable[[], None]] = POSTFORK_HOOKS.get(STRATEGY)
    if hook is not None:
        hook()


def _register_uwsgi_postfork() -> None:
    try:
        import uwsgi  # noqa: F401 - only present inside uWSGI
    except ImportError:
        return
    if STRATEGY in POSTFORK_HOOKS or INSTALL_AT == "postfork":
        from uwsgidecorators import postfork

        postfork(run_postfork_hook)


_register_uwsgi_postfork()
