"""The words under the lab's table: every column, every error kind, the app styles, the fixes.

Written for someone who has never read the lab's code: each line says what was measured and
what a bad value means, in plain terms. Error kinds are the short names
:mod:`forkguard_lab.harness.logscan` gives; the legend lists the kinds that appear in the cells
it describes (:data:`KIND_HELP` has one line per kind that module can produce, and a test keeps
the two in step).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from typing import Optional

from . import STRATEGIES

COLUMNS = (
    ("server", "the pre-fork server: uwsgi (a master process and 4 worker processes, as in "
     "the bug report) or gunicorn (4 sync workers)"),
    ("driver", "the database driver: pymysql and mysqlclient talk to MariaDB, psycopg2 and "
     "psycopg (version 3) to PostgreSQL; psycopg2/pgbouncer-session and "
     "psycopg2/pgbouncer-transaction talk to a private PgBouncer (session or transaction "
     "pooling) in front of that PostgreSQL, as a fleet of app hosts would"),
    ("strategy", "the fix under test (list below)"),
    ("reqs", "requests sent and answered (or failed); a '*' means the cell reached its time "
     "cap before the requested count, so it covers fewer requests (see the notes)"),
    ("HTTP err", "requests that did not get a normal answer: an error page, a dropped "
     "connection, or no answer within 12 s"),
    ("DB err", "database errors in the server's log during the load and the memory reading "
     "after it: in requests, in post-fork hooks, and while recycled workers exit"),
    ("wrong ans", "answers that carried another request's data (an echoed token or a looked-up "
     "user that was not the one asked for): two processes were reading one connection"),
    ("lost wr", "writes answered as saved (with the new row's id) but missing from the table "
     "afterwards; '+N': N more writes were answered with an error yet were saved anyway"),
    ("req/s", "requests per second during the load (noisy on a shared machine)"),
    ("PSS MB", "memory of the 4 workers together, as proportional set size (a page shared by "
     "several processes counts as a fraction in each): the median of readings taken during "
     "the load and right after it, each kept only if every worker answered a request both "
     "before it (so it had finished loading the app) and after it (so it was not shutting "
     "down); 'n/m' means not measured (see the notes)"),
    ("respawn", "one worker is killed; seconds until its replacement answers a database "
     "request. 'errors': the replacement answered with errors; 'never': no answer within 5 s; "
     "'-': not measured (no worker left); DB errors logged after the kill are in the notes"),
    ("DB error kinds", "the 3 most frequent kinds of database error, with counts (explained "
     "below); 'clean' means no problem of any kind in the cell"),
)  # fmt: skip

STYLE_HELP = {
    "fsa2": "Flask-SQLAlchemy 2 style, as in the bug report: the app sets up its database "
    "when it is imported, outside any request, so its session keeps the connection it opened, "
    "inside an open transaction, in the master process and in every worker forked from it",
    "fsa3": "Flask-SQLAlchemy 3 style: setup runs inside 'with app.app_context()', which "
    "hands the connection back to the pool; the master still holds that idle pooled "
    "connection when it forks the workers",
}

STRATEGY_HELP = {
    "none": "no fix: the app as reported",
    "dispose": "the user's first fix: db.engine.dispose() in a post-fork hook",
    "close-all-and-dispose": "the user's second fix: close every session, dispose() the "
    "engine and make a new session, in a post-fork hook",
    "dispose-noclose": "SQLAlchemy's documented recipe: engine.dispose(close=False) in a "
    "post-fork hook",
    "lazy": "no preloading: uWSGI --lazy-apps / gunicorn without --preload, so every worker "
    "imports the app itself after the fork (no connection is inherited, no memory is shared)",
    "forkguard": "forkguard.install() at the top of the app, nothing else changed",
}

# One line per kind logscan can produce; "{n}" stands for a number in the kind's name.
KIND_HELP = {
    "2006 gone away": "MySQL error 2006, 'server has gone away': the connection had been "
    "closed under the process - the error of the bug report",
    "2013 lost connection": "MySQL error 2013, 'lost connection during query': the "
    "connection broke while a query was running",
    "2014 out of sync": "MySQL error 2014, 'commands out of sync': the driver got a reply "
    "it had not asked for, sent to another process on the same connection",
    "packet sequence wrong": "the MySQL driver got packets numbered for someone else's "
    "conversation: two processes on one connection",
    "SSL": "an encryption error on the connection (bad record MAC, decryption failed): two "
    "processes writing to one encrypted connection",
    "server closed the connection": "PostgreSQL ended the connection, typically because "
    "another process closed it",
    "command in progress": "PostgreSQL's client library found another query already "
    "running on the connection: another process's",
    "lost sync (libpq)": "PostgreSQL's client library lost track of the conversation: "
    "another process read or wrote on the same connection",
    "pending rollback": "an earlier error left the session's transaction broken, and every "
    "later request in that worker fails until the app rolls it back (SQLAlchemy's "
    "PendingRollbackError)",
    "integrity": "a unique-key violation: a row was written twice, or read by the wrong process",
    "protocol garbage": "the driver got a reply that makes no sense for the query it sent "
    "(no result at all, an unknown prepared statement): another process took part of it",
    "wrong result shape": "a reply with the wrong number of columns: the answer to "
    "another process's query",
    "INSERT got no id": "an INSERT came back without the new row's id: the reply belonged "
    "to another statement",
    "txn aborted": "PostgreSQL refused the statement because an earlier one in the same "
    "transaction had failed",
    "result missing": "the driver expected rows and got none: another process had read the "
    "reply meant for this one",
    "conn closed": "the driver's connection had already been closed",
    "timeout": "a query or a connection attempt timed out",
    "worker crash (signal {n})": "a worker was killed by signal {n} (11: it crashed on a bad "
    "memory access); the lab's own kills are not counted",
    "harakiri (stuck worker)": "uWSGI killed a worker stuck on one request for more than 4 s "
    "(10 s for an app under --app)",
    "worker timeout (stuck)": "gunicorn killed a worker stuck on one request for more than 10 s",
    "segfault": "a process crashed on a bad memory access",
    "server exited (status {n})": "the server's master process stopped, with exit status {n} "
    "(gunicorn stops when new workers keep failing to start)",
}
OTHER_KIND = (
    "any other name is the Python exception class of an error the lab has no plain name for"
)
HARNESS_ERROR = (
    "HARNESS ERROR: the lab itself failed to run this cell (not the system under test); "
    "the message says why, and the cell's numbers mean nothing"
)


def kind_help(kind: str) -> Optional[str]:
    """The explanation of one error kind as it appears in a table, or None if unknown."""
    if kind in KIND_HELP:
        return KIND_HELP[kind]
    for name, text in KIND_HELP.items():
        if "{n}" in name:
            pattern = re.escape(name).replace(re.escape("{n}"), r"(\d+)")
            found = re.fullmatch(pattern, kind)
            if found:
                return text.replace("{n}", found.group(1))
    return None


# A user's app (``forkguard lab --app``): what differs from the lab's own app.
APP_COLUMNS = {
    "driver": (
        "app",
        "the user's WSGI app (--app), served through the lab's middleware, which "
        "only adds the answering worker's pid to each response",
    ),
    "wrong ans": (
        "wrong ans",
        "'-': not checked (the lab cannot know the right answer to a user's URL)",
    ),
    "lost wr": ("lost wr", "'-': not checked"),
}
APP_STRATEGY_HELP = {
    "none": "preloaded (uWSGI without --lazy-apps, gunicorn --preload), no fix: the app as "
    "deployed",
    "lazy": STRATEGY_HELP["lazy"],
    "forkguard": "preloaded, with 'import forkguard; forkguard.install()' as the first lines "
    "of the WSGI module the server loads, nothing else changed",
}


def legend(
    kinds: Iterable[str] = (), style: str = "fsa2", harness_error: bool = False, app: bool = False
) -> str:
    """Every column, the app style of the run, the strategies and the error ``kinds`` shown;
    ``app``: for a run of a user's app (``--app``)."""
    lines = ["Columns:"]
    if app:
        lines += _aligned([APP_COLUMNS.get(name, (name, text)) for name, text in COLUMNS])
        lines += ["", "Strategies:"]
        lines += _aligned(APP_STRATEGY_HELP.items())
    else:
        lines += _aligned(COLUMNS)
        lines += ["", *textwrap.wrap(f"App style {style}: {STYLE_HELP.get(style, style)}.", 100)]
        lines += ["", "Strategies:"]
        lines += _aligned([(name, STRATEGY_HELP[name]) for name in STRATEGIES])
    shown = sorted(set(kinds))
    if shown or harness_error:
        lines += ["", "Error kinds in this table:"]
        known = [(k, kind_help(k)) for k in shown]
        lines += _aligned([(k, text) for k, text in known if text is not None])
        if any(text is None for _, text in known):
            lines.append(f"  {OTHER_KIND}")
        if harness_error:
            lines.append(f"  {HARNESS_ERROR}")
    return "\n".join(lines)


def _aligned(items: Iterable[tuple[str, str]], width: int = 100) -> list[str]:
    """``name  text`` lines, the text wrapped and indented under itself."""
    pairs = list(items)
    pad = max((len(name) for name, _ in pairs), default=0)
    out: list[str] = []
    for name, text in pairs:
        wrapped = textwrap.wrap(text, width - pad - 4) or [""]
        out.append(f"  {name:<{pad}}  {wrapped[0]}")
        out += [f"  {'':<{pad}}  {more}" for more in wrapped[1:]]
    return out
