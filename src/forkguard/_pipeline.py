"""What happens in a child after a fork, in order, in one place.

0. integrations whose library was imported since ``install()`` are installed;
1. every inherited socket is silenced (the core invariant: before anything else can run, no
   inherited connection can send a byte to the server): database connections, then the
   sockets of network clients (HTTP keep-alive pools);
2. each integration's own after-fork step, in :data:`forkguard._integration.KNOWN`'s order
   (SQLAlchemy: stand-ins, fresh pools, sessions reset; Django: wrappers let go);
3. the GC freeze (``freeze_gc``).

A step that raises is reported (:mod:`._report`) and the next one still runs.
"""

from __future__ import annotations

from typing import Callable

from . import _freeze, _integration, _registry, _report, _sockets, _stats


def after_fork(parent_pid: int) -> None:
    _stats.reset_for_child()
    _stats.counters.forks_seen += 1
    _report.run_step("integration discovery", _integration.discover)
    _report.run_step("neutralizing inherited connections", _registry.neutralize_inherited)
    _report.run_step("neutralizing inherited client sockets", _sockets.neutralize_inherited)
    for integration in _integration.installed():
        _report.run_step(f"{integration.name} after-fork step", _bind(integration, parent_pid))
    _report.run_step("gc freeze", lambda: _freeze.after_fork(parent_pid))


def before_fork() -> None:
    """In the parent, right before ``os.fork()``: libraries imported since ``install()``."""
    _report.run_step("integration discovery", _integration.discover)


def _bind(integration: _integration.Integration, parent_pid: int) -> Callable[[], None]:
    return lambda: integration.after_fork(parent_pid)
