"""``forkguard lab``: the app from the bug report under real pre-fork servers, every known fix.

The reported app is Flask + Flask-SQLAlchemy on MySQL under uWSGI with 4 workers, failing with
"MySQL server has gone away". The user who reported it tried ``db.engine.dispose()`` in a
post-fork hook, then closing all sessions + ``dispose()`` + a new scoped session. The lab
rebuilds that app and runs those fixes, the other known ones and forkguard side by side.

One module per job: :mod:`.harness` (what the lab shares with the benchmarks and the tests:
private throwaway databases, pre-fork server processes, the HTTP load client, DB error kinds
from server logs, /proc), :mod:`.app` (the reported Flask app), :mod:`.views` (the model, routes
and error marker it shares with the fault suite's app and the benchmark's), :mod:`.runners` (the
app under uWSGI / gunicorn, one strategy each), :mod:`.matrix` (one cell, end to end),
:mod:`.memory` (when a PSS reading counts: every worker loaded and not shutting down),
:mod:`.report` (table, JSON, PNG), :mod:`.legend` (what every column and error kind means),
:mod:`.labdocs` (docs/lab.md and the README's lab block) and :mod:`.cli`; :mod:`.bench` is the
benchmarks.

Constants shared by the harness and the app live here, because importing :mod:`.app` builds
the app (it needs a database URL and, for one strategy, installs forkguard).
"""

from __future__ import annotations

# Columns of the matrix, in display order.
STRATEGIES = ("none", "dispose", "close-all-and-dispose", "dispose-noclose", "lazy", "forkguard")
STRATEGY_LABELS = {
    "none": "none",
    "dispose": "the user's first fix: dispose()",
    "close-all-and-dispose": "the user's second fix: close all sessions + dispose() + new session",
    "dispose-noclose": "SQLAlchemy: dispose(close=False)",
    "lazy": "lazy-apps / no --preload",
    "forkguard": "forkguard.install()",
}
DRIVERS = {
    # name -> (backend, SQLAlchemy dialect+driver)
    "pymysql": ("mysql", "pymysql"),
    "mysqlclient": ("mysql", "mysqldb"),
    "psycopg2": ("postgresql", "psycopg2"),
    "psycopg": ("postgresql", "psycopg"),
    # psycopg2 through a private PgBouncer in front of the private PostgreSQL, as a fleet
    # that outgrew one machine runs it: the workers still share their inherited socket, only
    # now it leads to the pooler.
    "psycopg2/pgbouncer-session": ("postgresql", "psycopg2"),
    "psycopg2/pgbouncer-transaction": ("postgresql", "psycopg2"),
}
# The drivers above that go through PgBouncer, and its pool_mode.
POOLED_DRIVERS = {
    "psycopg2/pgbouncer-session": "session",
    "psycopg2/pgbouncer-transaction": "transaction",
}
# One line per failed request or hook, written by the app and counted by logscan.
ERROR_MARKER = "FGLAB-ERROR"

__all__ = ["DRIVERS", "ERROR_MARKER", "POOLED_DRIVERS", "STRATEGIES", "STRATEGY_LABELS"]
