"""Count DB error kinds in a pre-fork server's log.

Two sources, counted once each:

* the app's own marker line (``FGLAB-ERROR ...``), one per failed request or post-fork hook;
* every other exception that reached the log - a traceback from a post-fork hook, from
  garbage collection (``Exception ignored in``) or from a worker's exit - counted once per
  chain (only the last exception of a "direct cause" / "during handling" chain);

plus worker deaths the server reports (a signal other than the SIGKILL the lab sends itself,
uWSGI harakiri, gunicorn worker timeouts).
"""

from __future__ import annotations

import re
from collections import Counter

from .. import ERROR_MARKER

# First match wins. Keys are what the table shows.
_KINDS: tuple[tuple[str, str], ...] = (
    (r"\(2006\b|gone away", "2006 gone away"),
    (r"\(2013\b|Lost connection to (MySQL|server)", "2013 lost connection"),
    (r"\(2014\b|out of sync|Command Out of Sync", "2014 out of sync"),
    (r"Packet sequence number wrong", "packet sequence wrong"),
    (r"SSL|decryption failed|bad record mac", "SSL"),
    (r"server closed the connection", "server closed the connection"),
    (r"another command is already in progress", "command in progress"),
    (r"lost synchronization with server", "lost sync (libpq)"),
    (r"PendingRollbackError|Can't reconnect until invalid transaction", "pending rollback"),
    (r"IntegrityError|Duplicate entry|duplicate key", "integrity"),
    (
        r"no message from the libpq|received 0 results|got no result|DuplicatePrepared",
        "protocol garbage",
    ),
    (r"tuple index out of range", "wrong result shape"),
    (r"did not produce a new primary key|NULL identity key", "INSERT got no id"),
    (r"InFailedSqlTransaction|current transaction is aborted", "txn aborted"),
    (r"no results to fetch|does not return rows|ResourceClosedError", "result missing"),
    (r"connection already closed|closed the connection|connection is closed", "conn closed"),
    (r"[Tt]imed? ?out", "timeout"),
)
_COMPILED = tuple((re.compile(pat), kind) for pat, kind in _KINDS)

_MARKER_RE = re.compile(re.escape(ERROR_MARKER) + r" where=(\S+) pid=\d+ exc=(\w+): ?(.*)$")
_EXC_LINE_RE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt))(?:: (.*))?$"
)
_CHAIN_RE = re.compile(r"^(The above exception was the direct cause|During handling of the above)")
_DIED_RE = re.compile(r"worker \d+ \(pid: \d+\) died, killed by signal (\d+)")


def classify(exc_name: str, message: str) -> str:
    """A short, stable name for an error: the known DB failure kinds, else the class name."""
    line = f"{exc_name}: {message}"
    for pattern, kind in _COMPILED:
        if pattern.search(line):
            return kind
    return exc_name.rsplit(".", 1)[-1]


def scan(text: str) -> Counter[str]:
    """Error kinds and their counts in one server log."""
    kinds: Counter[str] = Counter()
    lines = text.splitlines()
    for n, raw in enumerate(lines):
        line = raw.rstrip()
        marker = _MARKER_RE.search(line)
        if marker:
            kinds[classify(marker.group(2), marker.group(3))] += 1
            continue
        exc = _EXC_LINE_RE.match(line)
        if exc:
            nxt = next((ln for ln in lines[n + 1 : n + 4] if ln.strip()), "")
            if _CHAIN_RE.match(nxt):
                continue
            kinds[classify(exc.group(1), exc.group(2) or "")] += 1
            continue
        died = _DIED_RE.search(line)
        if died and died.group(1) != "9":
            kinds[f"worker crash (signal {died.group(1)})"] += 1
        elif "HARAKIRI ON WORKER" in line:
            kinds["harakiri (stuck worker)"] += 1
        elif "WORKER TIMEOUT" in line:
            kinds["worker timeout (stuck)"] += 1
        elif "Segmentation fault" in line:
            kinds["segfault"] += 1
    return kinds
