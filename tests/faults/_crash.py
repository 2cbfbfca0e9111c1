"""A write load for the hard-crash case, and the audit of its writes against the table.

Why its own load and not ``_harness.run_load``: the audit needs *every* write's unique email
with its outcome (200 with an id, an error answer, or no answer at all) and its time span, to
tell an acknowledged write from a refused one and to place each against the instant the
database was killed.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Optional

from forkguard_lab.harness.http import http_request
from forkguard_lab.harness.servers import DBServer, admin_execute

# What each server must say for an acknowledged commit to survive a SIGKILL of the server.
DURABLE = {
    "mysql": ("SELECT @@innodb_flush_log_at_trx_commit", ("1", "2")),
    "postgresql": ("SHOW synchronous_commit", ("on", "local", "remote_write", "remote_apply")),
}


def commit_durability(server: DBServer) -> tuple[str, bool]:
    """The server's commit-durability setting and whether it survives a process crash."""
    sql, durable = DURABLE[server.kind]
    value = str(admin_execute(server.kind, server.host, server.port, server.admin_user, sql)[0][0])
    return value, value in durable


@dataclass
class Write:
    email: str
    t0: float
    t1: float
    status: int  # 200, an HTTP error, or <= 0 for no answer (reset, refused, client timeout)
    row_id: Optional[int] = None


@dataclass
class WriteLoad:
    writes: list[Write] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok_since(self, t: float) -> int:
        with self.lock:
            return sum(w.status == 200 and w.t0 > t for w in self.writes)


def run_writes(
    port: int, load: WriteLoad, stop: threading.Event, *, clients: int, time_cap: float
) -> None:
    """``clients`` threads POST /user with unique emails until ``stop`` or ``time_cap``."""
    tag = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + time_cap
    counter = iter(range(10**9))

    def client() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            email = f"crash{next(counter)}-{tag}@fg-faults.invalid"
            t0 = time.monotonic()
            form = urllib.parse.urlencode({"email": email})
            status, body = http_request(port, "POST", "/user", form, 6.0)
            row_id = body.get("id") if isinstance(body, dict) and status == 200 else None
            with load.lock:
                load.writes.append(Write(email, t0, time.monotonic(), status, row_id))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(time_cap + 10)


@dataclass
class Audit:
    """Every write sorted by what the client was told and what the table holds."""

    acknowledged: int
    lost: list[Write]  # answered 200, not in the table (or under another id)
    refused: int  # answered with an HTTP error
    in_doubt: list[Write]  # answered with an error, in the table, in flight at the crash
    behind_back: list[Write]  # answered with an error, in the table, NOT in flight at the crash
    no_reply: int
    no_reply_committed: int


def audit(writes: list[Write], stored: dict[int, str], crash: tuple[float, float]) -> Audit:
    """Check the writes against the table's rows (id -> email) after the crash and restart.

    A write answered with an error may still be committed only if its COMMIT reached the
    server and the crash took the reply: such a request overlaps the crash ``(sent, done)``.
    Any other committed-but-refused write was committed behind the user's back.
    """
    by_email = {email: rid for rid, email in stored.items()}
    acked = [w for w in writes if w.status == 200]
    refused = [w for w in writes if w.status > 200]
    committed_refused = [w for w in refused if w.email in by_email]
    at_crash = [w for w in committed_refused if w.t0 <= crash[1] and w.t1 >= crash[0]]
    no_reply = [w for w in writes if w.status <= 0]
    return Audit(
        acknowledged=len(acked),
        lost=[w for w in acked if by_email.get(w.email) != w.row_id],
        refused=len(refused),
        in_doubt=at_crash,
        behind_back=[w for w in committed_refused if w not in at_crash],
        no_reply=len(no_reply),
        no_reply_committed=sum(w.email in by_email for w in no_reply),
    )
