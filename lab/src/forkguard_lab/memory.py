"""The workers' memory (PSS), read only once every worker has finished loading the app.

Why wait: workers recycle all the time (that is how the lab makes the master re-fork), and a
uWSGI ``--lazy-apps`` / gunicorn-without-``--preload`` worker imports the app *after* it is
forked: for a second or two it is a fresh process that grows from a few MB to its full size.
Memory read during that time makes lazy loading look cheaper than it is. An earlier version
sampled during the load and kept every sample whose workers went on to serve *at some point*;
under ``--quick`` most lazy-apps samples caught all four workers mid-import (6-45 MB each
instead of 86 MB), so forkguard's workers came out at 0.90-1.02x the lazy-apps PSS where
settled readings give 0.33-0.5x (forkguard's own figure moves with its workers' full garbage
collections, which un-share the app's pages).

A worker that has answered an HTTP request has loaded the app (both servers accept requests
only after the import), and one that answers again has not started to shut down (a recycled
worker frees much of its memory as it exits). So a reading counts only when every live worker
answered a request both before and after it: readings during the load (:class:`PssSampler`,
checked against the load's answers by :func:`settled_samples`) and, right after the load,
readings bracketed by probes (:func:`settled_pss`). The cell's figure is the median of all of
them. No reading, no number: the cell says why, and nothing is estimated.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable, Optional

from .harness.http import http_reply
from .harness.procfs import pss_kb


@dataclass(frozen=True)
class PssReading:
    """Total PSS of the workers (kB), or 0 with ``not_measured`` saying why."""

    total_kb: int = 0
    per_worker_kb: list[int] = field(default_factory=list)
    not_measured: str = ""
    readings: int = 0  # how many readings the median is over


class PssSampler:
    """Reads every worker's PSS every ``interval`` s while the load runs, with the time."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.2) -> None:
        self._pids = pids
        self._interval = interval
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fg-lab-pss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            taken_at = time.monotonic()
            sample = {pid: pss_kb(pid) for pid in self._pids()}
            self.samples.append((taken_at, {pid: kb for pid, kb in sample.items() if kb > 0}))
            self._stop.wait(self._interval)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._stop.set()
        self._thread.join(5)


def answer_spans(
    answers: Iterable[tuple[Optional[int], float, float]],
) -> dict[int, tuple[float, float]]:
    """{pid: (first reply, start of the last request)} from (pid, sent, replied) triples.

    A sample taken after a worker's first reply caught it loaded; one taken before a request
    that it went on to answer was sent caught it still serving, not shutting down.
    """
    spans: dict[int, tuple[float, float]] = {}
    for pid, sent, replied in answers:
        if pid is not None:
            first, last = spans.get(pid, (replied, sent))
            spans[pid] = (min(first, replied), max(last, sent))
    return spans


def settled_samples(
    samples: Sequence[tuple[float, dict[int, int]]],
    spans: dict[int, tuple[float, float]],
    workers: int,
) -> list[dict[int, int]]:
    """The samples in which all ``workers`` answered a request both before and after it.

    Before: a worker that answered only *later* may have been mid-import (the old bug kept
    those). After: a worker that never answered again may have been exiting - a recycled
    worker frees much of its memory while it shuts down.
    """
    return [
        sample
        for taken_at, sample in samples
        if len(sample) == workers
        and all(spans.get(pid, (math.inf, 0.0))[0] < taken_at < spans[pid][1] for pid in sample)
    ]


def settled_pss(
    live_pids: Callable[[], list[int]],
    probe: Callable[[], set[int]],
    workers: int,
    *,
    earlier: Sequence[dict[int, int]] = (),
    alive: Callable[[], bool] = lambda: True,
    readings: int = 3,
    timeout: float = 30.0,
) -> PssReading:
    """The median over ``earlier`` settled readings and ``readings`` more, each taken when all
    ``workers`` live pids had answered a probe, and kept once each of them answered again.

    ``live_pids`` lists the workers now; ``probe`` sends requests and returns the pids that
    answered them. Recycled workers are replaced and waited for too. Gives up at ``timeout`` or
    when ``alive()`` turns false (a server that halted).
    """
    answered: set[int] = set()
    taken: list[dict[int, int]] = []
    pending: Optional[dict[int, int]] = None  # a reading waiting for its workers to answer again
    again: set[int] = set()
    live: list[int] = []
    deadline = time.monotonic() + timeout
    while len(taken) < readings and time.monotonic() < deadline and alive():
        live = live_pids()
        if pending is not None and again.issuperset(pending):
            taken.append(pending)
            pending = None
        elif pending is not None and not set(live).issuperset(pending):
            pending = None  # one of its workers left: it may have been shutting down
        if pending is None and len(live) == workers and answered.issuperset(live):
            sample = {pid: pss_kb(pid) for pid in live}
            pending, again = (sample, set()) if all(sample.values()) else (None, set())
        got = probe()
        answered |= got
        again |= got
    every = [*earlier, *taken]
    if not every:
        why = _why_not(live, answered, workers, timeout) if alive() else "the server stopped"
        return PssReading(not_measured=why)
    middle = sorted(every, key=lambda s: sum(s.values()))[(len(every) - 1) // 2]
    return PssReading(
        total_kb=sum(middle.values()), per_worker_kb=sorted(middle.values()), readings=len(every)
    )


def _why_not(live: list[int], answered: set[int], workers: int, timeout: float) -> str:
    if len(live) != workers:
        return f"{len(live)} of {workers} workers were up at the end ({timeout:.0f}s)"
    waiting = len([pid for pid in live if pid not in answered])
    if waiting:
        return f"{waiting} of {workers} workers had not answered a request within {timeout:.0f}s"
    return f"the workers never all answered again after a reading within {timeout:.0f}s"


def probe_workers(port: int, workers: int, hold: float = 0.5, path: str = "/health") -> set[int]:
    """The pids that answered one burst of ``workers`` concurrent ``/health`` requests.

    Each request holds its worker for ``hold`` s, so a worker takes at most one and the burst
    reaches every worker that is accepting. Gentle on purpose: every request counts towards a
    worker's ``max-requests``, and a recycled lazy-apps worker must import the app again
    before it can be read - probing in quick bursts kept two workers recycling while the other
    two imported, so the four were never all loaded at once. ``/health`` touches no database,
    so a broken strategy still answers (a user's app gets the lab middleware's own ``path``).
    """
    pids: set[int] = set()
    lock = threading.Lock()

    def one() -> None:
        reply = http_reply(port, "GET", f"{path}?hold={hold}", timeout=5.0)
        if reply.status == 200 and reply.pid is not None:
            with lock:
                pids.add(reply.pid)

    threads = [threading.Thread(target=one) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if not pids:
        time.sleep(hold)  # nobody is accepting yet (all importing): do not spin
    return pids
