"""Keep preloading's copy-on-write savings: freeze the heap the workers inherit.

CPython's cyclic GC writes to the header of every object it examines, so one full collection in
a worker un-shares nearly every page it inherited from the master. ``gc.freeze()`` moves every
tracked object to a permanent generation that collections skip (an O(1) list splice). Done in
the master right before each fork — after a ``gc.collect()``, so garbage is not frozen with the
rest — the workers' collections leave the inherited objects, and their pages, alone.

uWSGI forks from C and runs no Python hook in the master before a fork, so there the freeze
happens first thing in each worker (our post-fork hook runs before any request): the worker's
collections skip the inherited objects just the same.
"""

from __future__ import annotations

import gc
import logging
import os

from . import _fork, _stats

log = logging.getLogger("forkguard")

_enabled = False
_registered = False
# The process that turned the freeze on: the one that imported the app, i.e. the pre-fork
# master. Its workers inherit ``_enabled``, but a worker that forks helpers of its own is not
# a pre-fork master, and freezing there would cost it a full collection for nothing.
_owner_pid: int | None = None


def _is_pre_fork_master() -> bool:
    """The process that turned the freeze on - or, once that one has exited, the process that
    carries on in its place (a master that daemonized after importing the app, as
    ``gunicorn --daemon --preload`` does). A worker's forks never qualify: its master lives."""
    global _owner_pid
    pid = os.getpid()
    if pid == _owner_pid:
        return True
    if _owner_pid is None or _alive(_owner_pid):
        return False
    _owner_pid = pid
    return True


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (an exited master its parent has not reaped yet is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True  # no /proc (not Linux): kill() said it exists
    state = stat[stat.rfind(b")") + 2 :][:1]  # the field after "(comm)"
    return state != b"Z"


def _before_fork() -> None:
    if not _enabled or not _is_pre_fork_master():
        return
    gc.collect()
    gc.freeze()
    _stats.counters.gc_freezes += 1
    log.debug("pid %d froze %d objects before fork", os.getpid(), gc.get_freeze_count())


def after_fork(parent_pid: int) -> None:
    """The last step of the child pipeline (the counters were reset for this child)."""
    if _enabled and _fork.under_uwsgi() and gc.get_freeze_count() == 0:
        # No pre-fork hook in a uWSGI master: freeze here, before this worker's first request.
        gc.freeze()
        _stats.counters.gc_freezes += 1


def enable() -> None:
    global _enabled, _registered, _owner_pid
    _enabled = True
    _owner_pid = os.getpid()
    if not _registered:
        os.register_at_fork(before=_before_fork)
        _registered = True


def disable() -> None:
    global _enabled
    _enabled = False
