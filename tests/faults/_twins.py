"""The unprotected twins' rounds: a fresh pre-fork server per round, until the hazard shows.

Why rounds: the fork hazards live in the first requests after the fork. Once a worker has
failed on the connection it inherited, SQLAlchemy invalidates it and the worker carries on with
its own, so running the *same* server longer adds no new chance (on MariaDB/PyMySQL the first
error even closes the shared session for every worker). A new server is a new master
connection inherited by four new workers: a new chance. The twins therefore repeat whole
rounds, bounded by a round count and a time cap, and stop at the first round that shows the
hazard; the test then asserts that it did.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from forkguard_lab.harness.http import http_get
from forkguard_lab.harness.load import LoadRun

from ._harness import app_server, db_error_kinds, run_load

T = TypeVar("T")


def repeat_until(
    one_round: Callable[[int], T], shown: Callable[[T], bool], *, rounds: int, time_cap: float
) -> list[T]:
    """Run ``one_round(n)`` until ``shown`` says yes, ``rounds`` ran or ``time_cap`` passed."""
    deadline = time.monotonic() + time_cap
    done: list[T] = []
    while True:
        done.append(one_round(len(done)))
        if shown(done[-1]) or len(done) >= rounds or time.monotonic() > deadline:
            return done


@dataclass
class Round:
    """One server's run: its load, its log, the DB error kinds in it, its ``/master`` answer."""

    load: LoadRun
    log_text: str
    kinds: Counter[str]
    master: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def serve_and_load(
    kind: str,
    url: str,
    workdir: str,
    *,
    guard: str,
    load_kwargs: dict[str, Any],
    connect_args: Optional[dict[str, Any]] = None,
    stop_when: Optional[Callable[[LoadRun], bool]] = None,
) -> Round:
    """Start the fsa2 app (the reported one), run one load on it, stop it; ``stop_when`` ends
    the load early as soon as it holds (polled while the load runs)."""
    os.makedirs(workdir, exist_ok=True)
    with app_server(kind, url, workdir, guard=guard, style="fsa2",
                    connect_args=connect_args) as srv:  # fmt: skip
        _, master = http_get(srv.port, "/master")
        load, stop = LoadRun(), threading.Event()
        th = threading.Thread(target=run_load, kwargs=dict(port=srv.port, stop=stop, run=load,
                                                           **load_kwargs))  # fmt: skip
        th.start()
        while th.is_alive():
            th.join(0.2)
            if stop_when is not None:
                with load.lock:
                    if stop_when(load):
                        stop.set()
        return Round(load, srv.read_log(), db_error_kinds(srv), master)


def leaked_or_spent(load: LoadRun, after_error: float = 1.0) -> bool:
    """For a round that looks for a cross-process leak: it showed one, or the shared
    connection is spent - ``after_error`` seconds have passed since the first failed request.

    Once a worker fails on the inherited connection the session on it is soon torn down for
    every worker (each then opens its own), so the rest of the round cannot leak any more; a
    fresh server is the next chance, and ending the round there buys more rounds.
    """
    if load.mismatches:
        return True
    failed = [r.t1 for r in load.reqs if r.status != 200]
    return bool(failed) and time.monotonic() - min(failed) > after_error


def merged(rounds: list[Round]) -> tuple[LoadRun, Counter[str], str]:
    """All rounds' requests, error kinds and logs as one."""
    load = LoadRun()
    kinds: Counter[str] = Counter()
    for r in rounds:
        load.reqs += r.load.reqs
        load.acknowledged += r.load.acknowledged
        load.timed_out = load.timed_out or r.load.timed_out
        kinds += r.kinds
    return load, kinds, "\n".join(r.log_text for r in rounds)
