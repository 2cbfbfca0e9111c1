"""Did this process fork? The one place every other module asks.

A fork reaches us in one of three ways, and forkguard listens to all of them:

* ``os.register_at_fork`` runs our hook in the child of ``os.fork()`` (multiprocessing,
  gunicorn, Celery/billiard) before any user code;
* uWSGI forks from C and skips those hooks unless told otherwise, so under uWSGI we put a
  hook at the *front* of its post-fork chain (keeping every hook already there);
* anything else that forks from C (``ctypes`` libc ``fork()``, C extensions) is caught at every
  pool checkout and at the start of every garbage collection. That check must be nearly free:
  ``getpid()`` is a real syscall (glibc no longer caches it; Rails found it topping their
  profiles), so on Linux we read one byte of a page mapped with ``MADV_WIPEONFORK`` instead —
  the kernel hands every child, however it was forked, a zeroed copy of that page.

Whichever sees the fork first runs the after-fork pipeline (:mod:`._pipeline`) exactly once per
process. A fork that happened while forkguard was not installed yet is remembered, so that an
``install()`` in the child can still handle it (:func:`pending_fork`).
"""

from __future__ import annotations

import gc
import logging
import mmap
import os
import sys
import threading
from typing import Any, Callable

from . import _report

log = logging.getLogger("forkguard")

Pipeline = Callable[[int], None]

# The pid whose fork handling is done; a different os.getpid() means we are in a new child.
_handled_pid = os.getpid()
_parent_pid = os.getppid()
# The child of a fork that happened while forkguard was not active: nothing has handled it.
_unguarded_fork = False
_pipeline: Pipeline | None = None
_active = False
_at_fork_registered = False
_gc_callback_registered = False
_uwsgi_hook_registered = False
_lock = threading.RLock()
_MADV_WIPEONFORK = 18  # linux/mman.h; the mmap module names it only on newer Pythons


def _make_fork_marker() -> mmap.mmap | None:
    """One page that reads 1 in this process and 0 in any child forked from it (Linux >= 4.14)."""
    if sys.platform != "linux":
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page.madvise(getattr(mmap, "MADV_WIPEONFORK", _MADV_WIPEONFORK))
    except (OSError, ValueError, AttributeError) as exc:
        log.debug("MADV_WIPEONFORK unavailable (%s); using getpid()", exc)
        return None
    page[0] = 1
    return page


_marker = _make_fork_marker()
_next_flag = 1  # byte 0 of the page is the fork marker itself


class ChildFlag:
    """One byte of the fork marker page: set in this process, 0 in every child until set there.

    The kernel zeroes the whole page in a child however it was forked, so a hot path can ask
    "has this process been set up since its fork?" with one byte read and no call: the caller
    sets its flag when it has done its post-fork work, and a fresh child falls to its slow path
    by itself. Only with ``MADV_WIPEONFORK`` (:func:`ChildFlag.new` returns None without it).
    """

    __slots__ = ("index", "page")

    def __init__(self, page: mmap.mmap, index: int) -> None:
        self.page = page
        self.index = index

    @classmethod
    def new(cls) -> ChildFlag | None:
        global _next_flag
        if _marker is None:
            return None
        with _lock:
            if _next_flag >= mmap.PAGESIZE:
                raise RuntimeError("forkguard: no fork marker bytes left")
            index, _next_flag = _next_flag, _next_flag + 1
        return cls(_marker, index)

    def set(self) -> None:
        self.page[self.index] = 1

    def __bool__(self) -> bool:
        return bool(self.page[self.index])


def parent_pid() -> int:
    """The pid of the process this one was forked from (as of our last fork handling)."""
    return _parent_pid


def set_pipeline(pipeline: Pipeline | None) -> None:
    """The function that handles a fork in the child (``pipeline(parent_pid)``)."""
    global _pipeline
    _pipeline = pipeline


def _forked_unnoticed() -> bool:
    if _marker is not None:
        return not _marker[0]
    return os.getpid() != _handled_pid


def check() -> bool:
    """Handle a fork that no hook reported, if this process forked since we last looked.

    This is the fallback for forks that ran no hook: one byte read (or, without
    ``MADV_WIPEONFORK``, one ``getpid()``). The checkout listener reads a :class:`ChildFlag`
    first and calls this only in a child not yet set up. True if this call handled a fork.
    """
    if not _forked_unnoticed():
        return False
    after_fork_in_child()
    return True


def pending_fork() -> int | None:
    """The parent's pid if this process came out of a fork nothing has handled yet, else None.

    Only a fork after forkguard was imported can be known this way: an ``install()`` in a
    worker, with ``import forkguard`` in the module the master loaded, finds it here.
    """
    if _forked_unnoticed():
        return _handled_pid
    return _parent_pid if _unguarded_fork else None


def after_fork_in_child() -> None:
    """Run the pipeline once for this process, whichever hook got here first."""
    global _handled_pid, _parent_pid, _unguarded_fork
    pid = os.getpid()
    if _marker is not None:
        _marker[0] = 1
    if pid == _handled_pid:
        return
    # Set first: a step that triggers another check must not re-enter.
    _parent_pid, _handled_pid = _handled_pid, pid
    _unguarded_fork = not _active
    if _active:
        _run_pipeline()


def handle_late(parent: int) -> None:
    """Run the pipeline now for a fork that happened before forkguard was active here."""
    global _handled_pid, _parent_pid, _unguarded_fork
    if _marker is not None:
        _marker[0] = 1
    _parent_pid, _handled_pid, _unguarded_fork = parent, os.getpid(), False
    _run_pipeline()


def _run_pipeline() -> None:
    if _pipeline is None:
        return
    try:
        _pipeline(_parent_pid)
    except Exception:
        _report.step_failed("after-fork handling")


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    # A collection in a child can finalize a driver object that talks on close (mysqlclient
    # sends COM_QUIT in its dealloc); make sure the fork was handled before that happens.
    if phase == "start" and _active:
        check()


def _run_in_child() -> None:
    after_fork_in_child()


def under_uwsgi() -> bool:
    """True inside a uWSGI process (master or worker): its embedded module is loaded."""
    return "uwsgi" in sys.modules


def _install_uwsgi_hook() -> None:
    """Put our hook first in uWSGI's post-fork chain, keeping whatever hooks were there.

    Importing ``uwsgidecorators`` replaces ``uwsgi.post_fork_hook`` with its own chain runner,
    so where it exists we join its chain (and re-add any hook it replaced). A uWSGI serving a
    virtualenv without it (a distro uWSGI) gets our hook chained in front of the one set.
    """
    global _uwsgi_hook_registered
    if _uwsgi_hook_registered:
        return
    try:
        import uwsgi
    except ImportError:
        return
    # Read before importing uwsgidecorators: the import overwrites it with its chain runner.
    previous = getattr(uwsgi, "post_fork_hook", None)
    try:
        import uwsgidecorators
    except ImportError:
        _chain_uwsgi_hook(uwsgi, previous)
    else:
        in_worker = uwsgi.worker_id() > 0 if hasattr(uwsgi, "worker_id") else False
        _join_uwsgidecorators_chain(uwsgidecorators, previous, first=not in_worker)
    _uwsgi_hook_registered = True
    log.debug("uWSGI post-fork hook registered")


def _join_uwsgidecorators_chain(uwsgidecorators: Any, previous: Any, *, first: bool) -> None:
    chain = uwsgidecorators.postfork_chain
    if previous not in (None, uwsgidecorators.postfork_chain_hook) and previous not in chain:
        chain.append(previous)
    if first:
        chain.insert(0, _run_in_child)
    else:
        # install() inside a worker's own @postfork hook: uWSGI is iterating over this chain
        # right now, and an insert at the front would run the current hook a second time.
        chain.append(_run_in_child)


def _chain_uwsgi_hook(uwsgi: Any, previous: Any) -> None:
    def post_fork_hook() -> None:
        _run_in_child()
        if previous is not None:
            previous()

    post_fork_hook.forkguard_previous = previous  # type: ignore[attr-defined]
    uwsgi.post_fork_hook = post_fork_hook


def _remove_uwsgi_hook() -> None:
    global _uwsgi_hook_registered
    if not _uwsgi_hook_registered:
        return
    chain = getattr(sys.modules.get("uwsgidecorators"), "postfork_chain", None)
    if chain is not None:
        while _run_in_child in chain:
            chain.remove(_run_in_child)
    else:
        uwsgi: Any = sys.modules["uwsgi"]
        hook: Any = getattr(uwsgi, "post_fork_hook", None)
        if hasattr(hook, "forkguard_previous"):
            uwsgi.post_fork_hook = hook.forkguard_previous
    _uwsgi_hook_registered = False


def _before_fork() -> None:
    if _active and _before_fork_hook is not None:
        _before_fork_hook()


_before_fork_hook: Callable[[], None] | None = None


def set_before_fork(hook: Callable[[], None] | None) -> None:
    """Run ``hook()`` in the parent right before each ``os.fork()`` while active."""
    global _before_fork_hook
    _before_fork_hook = hook


def activate() -> None:
    """Start listening for forks (idempotent)."""
    global _active, _at_fork_registered, _gc_callback_registered
    with _lock:
        _active = True
        if not _at_fork_registered:
            # at-fork hooks cannot be unregistered; deactivate() makes ours a no-op instead.
            os.register_at_fork(before=_before_fork, after_in_child=_run_in_child)
            _at_fork_registered = True
        if not _gc_callback_registered:
            gc.callbacks.append(_gc_callback)
            _gc_callback_registered = True
        _install_uwsgi_hook()


def deactivate() -> None:
    global _active, _gc_callback_registered
    with _lock:
        _active = False
        if _gc_callback_registered:
            while _gc_callback in gc.callbacks:
                gc.callbacks.remove(_gc_callback)
            _gc_callback_registered = False
        _remove_uwsgi_hook()
