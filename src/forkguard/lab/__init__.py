"""``forkguard lab``: the seed's app under real pre-fork servers, with every known fix.

One module per job: :mod:`.servers` (private throwaway databases), :mod:`.app` (the seed's
Flask app), :mod:`.runners` (uWSGI / gunicorn), :mod:`.load` (the client), :mod:`.logscan`
(DB error kinds from server logs), :mod:`.matrix` (one cell, end to end), :mod:`.report`
(table, JSON, PNG) and :mod:`.cli`.

Constants shared by the harness and the app live here, because importing :mod:`.app` builds
the app (it needs a database URL and, for one strategy, installs forkguard).
"""

from __future__ import annotations

# Columns of the matrix, in display order.
STRATEGIES = ("none", "dispose", "seed-update", "dispose-noclose", "lazy", "forkguard")
STRATEGY_LABELS = {
    "none": "none",
    "dispose": "seed: dispose()",
    "seed-update": "seed: close_all+dispose+new session",
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
}
# One line per failed request or hook, written by the app and counted by logscan.
ERROR_MARKER = "FGLAB-ERROR"

__all__ = ["DRIVERS", "ERROR_MARKER", "STRATEGIES", "STRATEGY_LABELS"]
