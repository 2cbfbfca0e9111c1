"""How forkguard tells the user that its own fork handling went wrong: never silently.

forkguard's logger has no handler of its own, so with no logging configured Python's
last-resort handler prints WARNING and ERROR records to stderr as one line each; with logging
configured they go wherever the user sends them. Either way every failure is also counted in
:func:`forkguard.stats`, so a worker can be asked after the fact.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

from . import _stats

log = logging.getLogger("forkguard")

T = TypeVar("T")


def neutralize_failed(message: str) -> None:
    """An inherited connection we could not silence: its socket may still reach the server."""
    _stats.counters.neutralize_failed += 1
    log.error("forkguard could not neutralize %s in pid %d", message, os.getpid())


def step_failed(step: str) -> None:
    """A step of the fork handling raised; call from an ``except`` block (logs the traceback)."""
    _stats.counters.fork_handling_errors += 1
    log.exception("forkguard's %s raised in pid %d", step, os.getpid())


def run_step(step: str, fn: Callable[[], T]) -> T | None:
    """Run one step of the fork handling; a failure is reported and the next step still runs."""
    try:
        return fn()
    except Exception:
        step_failed(step)
        return None
