"""The HTTP load of the lab, the benchmarks and the tests: bounded, concurrent, every answer
checked, every request recorded.

Bounded twice - by a request count and by a time cap (or a ``stop`` event) - so a run whose
workers hang still ends. :func:`drive` is the concurrency; :func:`run_load` sends the apps'
requests through it and checks every answer against what was asked:

* echo: the reply must carry the client's own token (anything else is a cross-process leak);
* read: a user looked up by email must come back with that email, or not at all;
* write: a 200 with an id is an *acknowledged* write; the caller later checks that every
  acknowledged (id, email) pair is in the table (a missing one is a lost write), and that
  writes answered with an error did not get committed anyway.

Each request becomes a :class:`Req` (op, start, end, status, worker pid), so a fault test can
place failures in time; :class:`LoadRun` also sums them the way the lab's table counts them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar

from .http import STATUS_NAMES, http_reply, http_request

log = logging.getLogger("forkguard_lab")

# The lab's mix, out of every 10 requests: 4 echo, 3 reads, 3 writes.
LAB_MIX = ("echo", "echo", "write", "read", "echo", "write", "read", "echo", "write", "read")
CLIENT_ERROR = -2  # the client itself raised: a bug here, counted, never hidden
_NAMES = {**STATUS_NAMES, CLIENT_ERROR: "client-exception"}
T = TypeVar("T")


@dataclass
class Req:
    """One request: what it asked, when (``time.monotonic()``), and what came back."""

    op: str
    t0: float
    t1: float
    status: int
    pid: Optional[int]
    mismatch: bool = False
    conn_id: Optional[int] = None


@dataclass
class LoadRun:
    """Every request of a run, what the writes acknowledged and which writes failed.

    A caller may watch a run in progress: read ``reqs`` under ``lock``.
    """

    reqs: list[Req] = field(default_factory=list)
    acknowledged: list[tuple[int, str]] = field(default_factory=list)
    failed_writes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    timed_out: bool = False
    cut_off: int = 0  # requests still in flight when the run ended: not counted
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def requests(self) -> int:
        return len(self.reqs)

    @property
    def ok(self) -> int:
        return sum(r.status == 200 for r in self.reqs)

    @property
    def failed(self) -> list[Req]:
        return [r for r in self.reqs if r.status != 200]

    @property
    def http_errors(self) -> int:
        return self.requests - self.ok

    @property
    def mismatches(self) -> int:
        return sum(r.mismatch for r in self.reqs)

    @property
    def echo_mismatches(self) -> int:
        return sum(r.mismatch for r in self.reqs if r.op == "echo")

    @property
    def read_mismatches(self) -> int:
        """Reads that returned another user, and writes acknowledged with another email."""
        return self.mismatches - self.echo_mismatches

    @property
    def status_counts(self) -> Counter[str]:
        """The failures by status ("500", "no reply", "client timeout", ...)."""
        return Counter(_NAMES.get(r.status, str(r.status)) for r in self.failed)

    def statuses(self) -> dict[str, int]:
        """Every request by status, the 200s included."""
        return dict(Counter(_NAMES.get(r.status, str(r.status)) for r in self.reqs))

    @property
    def pids_seen(self) -> set[int]:
        return {r.pid for r in self.reqs if r.pid is not None}

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


# The lab's LoadResult is the same record.
LoadResult = LoadRun


def drive(
    request: Callable[[int, random.Random], T],
    keep: Callable[[T], None],
    *,
    total: int,
    concurrency: int,
    time_cap: float,
    grace: float,
    lock: threading.Lock,
    seed: int = 0,
    stop: Optional[threading.Event] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> tuple[float, bool, int]:
    """Run ``request(i, rng)`` for i = 0.. from ``concurrency`` threads; (elapsed, timed out,
    cut off).

    No new request starts after ``total``, ``time_cap`` or ``stop``. Each result goes to
    ``keep`` under ``lock``; one that comes back more than ``grace`` seconds after the cap is
    cut off, not kept: the run's time is bounded, and a request we stopped waiting for proves
    nothing. ``seed`` seeds each thread's random number generator, so two runs with the same
    seed ask the same questions.
    """
    next_index = [0]
    timed_out = [False]
    closed = [False]  # set when the run ends; late results are then dropped
    t0 = time.monotonic()
    deadline = t0 + time_cap

    def claim() -> Optional[int]:
        with lock:
            if closed[0] or next_index[0] >= total or (stop is not None and stop.is_set()):
                return None
            if time.monotonic() > deadline:
                timed_out[0] = True
                return None
            next_index[0] += 1
            return next_index[0] - 1

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while (i := claim()) is not None:
            result = request(i, rng)
            with lock:
                if closed[0]:
                    return
                keep(result)
            if progress is not None:
                progress(1)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for th in threads:
        th.start()
    stop_at = deadline + grace
    for th in threads:
        th.join(max(0.0, stop_at - time.monotonic()))
    with lock:
        closed[0] = True
        return time.monotonic() - t0, timed_out[0], sum(th.is_alive() for th in threads)


def run_load(
    port: int,
    *,
    total: int,
    concurrency: int = 16,
    time_cap: float = 30.0,
    ops: Sequence[str] = LAB_MIX,
    known_read_share: float = 0.8,
    hold: float = 0.0,
    seed: int = 0,
    request_timeout: float = 12.0,
    grace: float = 3.0,
    stop: Optional[threading.Event] = None,
    progress: Optional[Callable[[int], None]] = None,
    run: Optional[LoadRun] = None,
) -> LoadRun:
    """``total`` requests, ``ops`` in turn (echo, read, write; ``"METHOD /path"`` as is, the
    worker's pid from the lab's middleware header; any other op is a plain
    ``GET /<op>``), from ``concurrency`` threads: see :func:`drive` for the bounds.

    A read asks for a user this run wrote with probability ``known_read_share`` (else one that
    does not exist); ``hold`` makes each echo keep its worker busy that long, so a burst
    spreads over the workers. Pass ``run`` to watch the requests while the load goes on.
    """
    run = run if run is not None else LoadRun()
    client = _Client(port, request_timeout, hold, known_read_share)

    def request(i: int, rng: random.Random) -> tuple[Req, str, Optional[tuple[int, str]]]:
        op = ops[i % len(ops)]
        t0 = time.monotonic()
        try:
            return client.one(op, i, rng, run.lock, t0)
        except Exception:
            log.exception("load client request %d failed in the client itself", i)
            return Req(op, t0, time.monotonic(), CLIENT_ERROR, None), "", None

    def keep(result: tuple[Req, str, Optional[tuple[int, str]]]) -> None:
        req, email, ack = result
        run.reqs.append(req)
        if ack is not None:
            run.acknowledged.append(ack)
            if not req.mismatch:
                client.written.append(email)
        elif req.op == "write" and req.status > 0:
            # Answered with an error: the write must not be in the table. (No answer at all
            # proves nothing either way, so it is not checked.)
            run.failed_writes.append(email)

    elapsed, timed_out, cut_off = drive(
        request, keep, total=total, concurrency=concurrency, time_cap=time_cap, grace=grace,
        lock=run.lock, seed=seed, stop=stop, progress=progress,
    )  # fmt: skip
    with run.lock:
        run.elapsed, run.timed_out, run.cut_off = elapsed, timed_out, cut_off
    return run


class _Client:
    """The three checked requests of :func:`run_load`, and the emails this run wrote."""

    def __init__(self, port: int, timeout: float, hold: float, known_read_share: float) -> None:
        self.port, self.timeout, self.hold = port, timeout, hold
        self.known_read_share = known_read_share
        self.tag = uuid.uuid4().hex[:8]
        self.written: list[str] = []

    def one(
        self, op: str, i: int, rng: random.Random, lock: threading.Lock, t0: float
    ) -> tuple[Req, str, Optional[tuple[int, str]]]:
        """(the request's record, the email it wrote or read, the acknowledged write)."""
        email, ack, mismatch = "", None, False
        if op == "echo":
            token = uuid.uuid4().hex
            path = f"/echo?token={token}" + (f"&hold={self.hold}" if self.hold else "")
            status, body = self._get(path)
            mismatch = status == 200 and not (isinstance(body, dict) and body.get("token") == token)
        elif op == "read":
            with lock:
                email = self._email_to_read(i, rng)
            flavor = "session" if i % 2 else "query"
            status, body = self._get("/user?" + urllib.parse.urlencode(
                {"email": email, "flavor": flavor}))  # fmt: skip
            mismatch = status == 200 and not (
                isinstance(body, dict) and body.get("email") in (None, email)
            )
        elif op == "write":
            email = f"u{i}-{self.tag}@fg-load.invalid"
            form = urllib.parse.urlencode({"email": email})
            status, body = http_request(self.port, "POST", "/user", form, self.timeout)
            if status == 200 and isinstance(body, dict) and isinstance(body.get("id"), int):
                ack = (body["id"], str(body.get("email")))
                mismatch = body.get("email") != email
        elif " " in op:  # "METHOD /path": a user's URL, answered by whatever their app says
            method, path = op.split(" ", 1)
            reply = http_reply(self.port, method, path, timeout=self.timeout)
            return Req(op, t0, time.monotonic(), reply.status, reply.pid), email, ack
        else:
            status, body = self._get(f"/{op}")
        pid = body.get("pid") if isinstance(body, dict) else None
        conn_id = body.get("conn_id") if isinstance(body, dict) else None
        req = Req(op, t0, time.monotonic(), status, pid if isinstance(pid, int) else None,
                  mismatch, conn_id)  # fmt: skip
        return req, email, ack

    def _get(self, path: str) -> tuple[int, object]:
        return http_request(self.port, "GET", path, None, self.timeout)

    def _email_to_read(self, i: int, rng: random.Random) -> str:
        share = self.known_read_share
        known = self.written and (share >= 1 or rng.random() < share)
        return rng.choice(self.written) if known else f"nobody-{self.tag}-{i}@fg-load.invalid"
