"""A bounded, concurrent HTTP client: echo, reads and writes, checking every answer.

Bounded twice - by a request count and by a time cap - so a cell whose workers hang still ends.
Every answer is checked against what was asked:

* echo: the reply must carry the client's own token (anything else is a cross-process leak);
* read: a user looked up by email must come back with that email, or not at all;
* write: a 200 with an id is an *acknowledged* write; the lab later checks that every
  acknowledged (id, email) pair is in the table (a missing one is a lost write), and that
  writes answered with an error did not get committed anyway.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..runners import NO_REPLY, TIMED_OUT, http_request

log = logging.getLogger("forkguard_lab")

# Out of every 10 requests: 4 echo, 3 reads, 3 writes.
_MIX = ("echo", "echo", "write", "read", "echo", "write", "read", "echo", "write", "read")


@dataclass
class LoadResult:
    """What the client saw; the lab adds server-side facts (logs, table, memory) to it."""

    requests: int = 0
    ok: int = 0
    http_errors: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)
    echo_mismatches: int = 0
    read_mismatches: int = 0
    acknowledged: list[tuple[int, str]] = field(default_factory=list)
    failed_writes: list[str] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)
    elapsed: float = 0.0
    timed_out: bool = False
    cut_off: int = 0

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


def run_load(
    port: int,
    *,
    total: int,
    concurrency: int = 16,
    time_cap: float = 30.0,
    seed: int = 0,
    request_timeout: float = 12.0,
    grace: float = 3.0,
    progress: Optional[Callable[[int], None]] = None,
) -> LoadResult:
    """Send ``total`` requests from ``concurrency`` threads, stopping early at ``time_cap``.

    ``seed`` seeds the client threads' random number generators (which stored user a read
    asks for), so two runs with the same seed ask the same questions.
    """
    result = LoadResult()
    lock = threading.Lock()
    next_index = [0]
    run_tag = uuid.uuid4().hex[:8]
    written: list[str] = []
    closed = [False]  # set when the result is handed back; late answers are then ignored
    t0 = time.monotonic()
    deadline = t0 + time_cap

    def claim() -> Optional[int]:
        with lock:
            if next_index[0] >= total:
                return None
            if time.monotonic() > deadline:
                result.timed_out = True
                return None
            next_index[0] += 1
            return next_index[0] - 1

    def one(i: int, rng: random.Random) -> None:
        op = _MIX[i % len(_MIX)]
        # Above the servers' own limit for a stuck worker (harakiri / --timeout), so a stuck
        # worker shows as the server's error, and a request in flight at the cap completes.
        timeout = request_timeout
        if op == "echo":
            token = uuid.uuid4().hex
            status, body = http_request(port, "GET", f"/echo?token={token}", None, timeout)
            bad = status == 200 and not (isinstance(body, dict) and body.get("token") == token)
            with lock:
                if closed[0]:
                    return
                _count(result, status, body)
                result.echo_mismatches += int(bad)
        elif op == "read":
            with lock:
                email = (
                    rng.choice(written)
                    if written and rng.random() < 0.8
                    else (f"nobody-{run_tag}-{i}@fg-lab.invalid")
                )
            flavor = "session" if i % 2 else "query"
            q = urllib.parse.urlencode({"email": email, "flavor": flavor})
            status, body = http_request(port, "GET", f"/user?{q}", None, timeout)
            bad = status == 200 and not (
                isinstance(body, dict) and body.get("email") in (None, email)
            )
            with lock:
                if closed[0]:
                    return
                _count(result, status, body)
                result.read_mismatches += int(bad)
        else:
            email = f"u{i}-{run_tag}@fg-lab.invalid"
            form = urllib.parse.urlencode({"email": email})
            status, body = http_request(port, "POST", "/user", form, timeout)
            with lock:
                if closed[0]:
                    return
                _count(result, status, body)
                if status == 200 and isinstance(body, dict) and isinstance(body.get("id"), int):
                    result.acknowledged.append((body["id"], str(body.get("email"))))
                    if body.get("email") == email:
                        written.append(email)
                    else:
                        result.read_mismatches += 1
                elif status > 0:
                    # Answered with an error: the write must not be in the table. (No answer at
                    # all proves nothing either way, so it is not checked.)
                    result.failed_writes.append(email)

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while not closed[0] and (i := claim()) is not None:
            try:
                one(i, rng)
            except Exception:
                log.exception("load client request %d failed in the client itself", i)
                with lock:
                    if closed[0]:
                        return
                    result.requests += 1
                    result.http_errors += 1
                    result.status_counts["client-exception"] += 1
            if progress is not None:
                progress(1)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for th in threads:
        th.start()
    # Requests still in flight `grace` seconds after the cap are cut off, not counted: the
    # cell's time is bounded, and a request we stopped waiting for proves nothing.
    stop_at = deadline + grace
    for th in threads:
        th.join(max(0.0, stop_at - time.monotonic()))
    with lock:
        closed[0] = True
        result.cut_off = sum(th.is_alive() for th in threads)
        result.elapsed = time.monotonic() - t0
        return copy.deepcopy(result)


def _count(result: LoadResult, status: int, body: object) -> None:
    result.requests += 1
    if status == 200:
        result.ok += 1
    else:
        result.http_errors += 1
        names = {NO_REPLY: "no reply", TIMED_OUT: "client timeout"}
        result.status_counts[names.get(status, str(status))] += 1
    if isinstance(body, dict) and isinstance(body.get("pid"), int):
        result.pids_seen.add(body["pid"])
