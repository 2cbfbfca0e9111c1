"""A preloadable Flask-SQLAlchemy app with a large working set built at import.

What uWSGI (``--module forkguard_lab.bench.memapp:app``) and gunicorn
(``forkguard_lab.bench.memapp:app``) load for the memory benchmark. Configured by environment:

``FG_BENCH_DB_URL``     SQLAlchemy URL (required)
``FG_BENCH_TABLE``      the users table (the harness creates it; name starts with ``fg_bench_``)
``FG_BENCH_MB``         size of the import-time working set in MB (default 300)
``FG_BENCH_GUARD``      ``forkguard`` to call ``forkguard.install()`` first thing; ``dispose`` for
                        no forkguard and SQLAlchemy's recipe in a post-fork hook
                        (``engine.dispose(close=False)``: uWSGI ``@postfork`` here, gunicorn's
                        ``post_fork`` server hook calls :func:`dispose_after_fork`); else ``none``
``FORKGUARD_FREEZE_GC`` ``1`` for the freeze variant (read by ``forkguard.install()``)
``FG_BENCH_IMPORT_SESSION`` ``open`` (default: the import-time transaction stays open, as the
                        reported app's did) or ``closed`` (the session is closed at import)

The working set is what a real app holds after import: about 850k rows per 300 MB, each a
dict with a string, an int, a float and a small list - all container objects the cyclic GC
tracks (a list is never untracked), so a full collection in a worker touches every one of them
unless they are frozen. At import the app also runs a query through Flask-SQLAlchemy the way
the reported app did (an app context pushed at import and never popped: the master holds a
checked-out connection in a transaction), so a preloaded master really does hand its workers a
connection.

Endpoints: the lab load's ``/echo``, ``/user`` (GET and POST) and ``/health``, plus
``/gc`` (one full ``gc.collect()`` in the worker that serves it). Every request also reads a
random 0.1 % slice of the working set, as a cache lookup would: the reference counts it bumps
are what un-share a preloaded worker's pages under load.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import time
from typing import Any

GUARD = os.environ.get("FG_BENCH_GUARD", "none")
if GUARD == "forkguard":
    import forkguard

    forkguard.install()
elif GUARD not in ("none", "dispose"):
    raise RuntimeError(f"FG_BENCH_GUARD={GUARD!r}: expected forkguard, dispose or none")

from flask import Flask, jsonify  # noqa: E402 - forkguard.install() comes first
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

from forkguard_lab.views import add_user_routes, hold, user_model  # noqa: E402

DB_URL = os.environ.get("FG_BENCH_DB_URL", "")
TABLE = os.environ.get("FG_BENCH_TABLE", "fg_bench_users")
MB = float(os.environ.get("FG_BENCH_MB", "300"))
SLICES = 1000
if not DB_URL:
    raise RuntimeError("FG_BENCH_DB_URL is not set (forkguard bench sets it)")


def _row(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user-{i:09d}", "score": i * 0.5, "tags": [i % 7, i % 11]}


def _row_bytes(row: dict[str, Any]) -> int:
    tags = row["tags"]
    return (
        sys.getsizeof(row)
        + sys.getsizeof(row["name"])
        + sys.getsizeof(row["score"])
        + sys.getsizeof(row["id"])
        + sys.getsizeof(tags)
        + 8  # the outer list's pointer
    )


def build_working_set(mb: float) -> list[dict[str, Any]]:
    """About ``mb`` MB of rows.

    The GC is paused while building (3x faster here), then one full collection settles it. A
    real app grows its heap with the collector on and ends its import having paid several full
    collections; paused and never settled, all ~1.7M new objects would still sit in the
    youngest generation, and every worker forked from a master that runs no Python after the
    import (uWSGI's) would inherit that debt: a collection of the whole heap within its first
    requests, un-sharing every page. The pause and the one collection together cost less than
    the real thing, so they only shorten the start-up and respawn of lazy-apps workers - they
    favour the baseline.
    """
    per_row = _row_bytes(_row(10**6))
    gc.disable()
    try:
        rows = [_row(i) for i in range(max(1, int(mb * 1024 * 1024 / per_row)))]
    finally:
        gc.enable()
    gc.collect()
    return rows


t_start = time.monotonic()
DATA = build_working_set(MB)
SLICE = max(1, len(DATA) // SLICES)

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = DB_URL
db = SQLAlchemy(app, session_options={"expire_on_commit": False})


def _log_write_failure(where: str, exc: BaseException) -> None:
    """The benchmark's log line for a failed save (its traceback goes to Flask's logger)."""
    app.logger.exception("fg-bench: write failed")


User = user_model(db, TABLE, _log_write_failure)


# The reported app's import-time setup: an app context pushed and never popped, one query - whose
# transaction stays open, holding a connection across the fork, unless
# FG_BENCH_IMPORT_SESSION=closed (the dispose variant: SQLAlchemy's recipe covers the pool only;
# and forkguard-closed, forkguard on that same changed app).
app.app_context().push()
User.query.filter(User.email == "nobody@fg-bench.invalid").scalar()
IMPORT_SESSION = os.environ.get("FG_BENCH_IMPORT_SESSION", "open")
if IMPORT_SESSION == "closed":
    db.session.close()
elif IMPORT_SESSION != "open":
    raise RuntimeError(f"FG_BENCH_IMPORT_SESSION={IMPORT_SESSION!r}: expected open or closed")
IMPORT_SECONDS = time.monotonic() - t_start
ENGINE = db.engine
POSTFORK_RUNS = 0


def dispose_after_fork() -> None:
    """SQLAlchemy's documented recipe, in a worker right after the fork: a fresh pool, the
    inherited connections left alone (the one the import-time session holds stays with it)."""
    global POSTFORK_RUNS
    if GUARD == "dispose":
        ENGINE.dispose(close=False)
        POSTFORK_RUNS += 1


def _register_uwsgi_postfork() -> None:
    try:
        import uwsgi  # noqa: F401 - only present inside uWSGI
    except ImportError:
        return
    if GUARD == "dispose":
        from uwsgidecorators import postfork

        postfork(dispose_after_fork)


_register_uwsgi_postfork()


@app.before_request
def _touch_working_set() -> None:
    start = random.randrange(0, max(1, len(DATA) - SLICE))
    total = 0
    for row in DATA[start : start + SLICE]:
        total += row["id"]


@app.get("/health")
def health() -> Any:
    hold(2.0)
    return jsonify(
        pid=os.getpid(),
        rows=len(DATA),
        import_seconds=IMPORT_SECONDS,
        freeze_count=gc.get_freeze_count(),
        postfork_runs=POSTFORK_RUNS,
    )


@app.get("/gc")
def collect() -> Any:
    t0 = time.monotonic()
    found = gc.collect()
    took = time.monotonic() - t0
    hold(2.0)
    return jsonify(
        pid=os.getpid(), collected=found, seconds=took, freeze_count=gc.get_freeze_count()
    )


# /echo, GET /user (db.session.query), POST /user (save(): commit, or roll back and log).
add_user_routes(app, db, User, lookup="session", most_hold=2.0)
