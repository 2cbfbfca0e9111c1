"""install / protect / uninstall / track / stats: the logic behind the package's face.

``install()`` gives the same protection wherever it runs: before or after the engines exist,
in the master, or in a worker after the fork. In the last case it finds the connections the
worker inherited (:func:`forkguard._registry.owner_of_found`), runs the after-fork pipeline
for them at once, and logs a WARNING naming the line that called it: protection then starts
only where the line is, and anything that ran in the worker before it could have used them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from . import _fork, _freeze, _integration, _origin, _pipeline, _registry, _sockets, _stats
from ._config import configure, load_environment, settings

log = logging.getLogger("forkguard")

_installed = False


def install(
    *,
    mode: str | None = None,
    trace: bool | None = None,
    freeze_gc: bool | None = None,
    resilient: bool | None = None,
    orm_fork_check: bool | None = None,
) -> None:
    """Make every SQLAlchemy engine, Django connection, HTTP client pool (urllib3 and so
    requests; httpx) and AMQP connection (pika; py-amqp, kombu's) in this process fork-safe.

    Idempotent. Reads ``FORKGUARD_MODE``, ``FORKGUARD_TRACE``, ``FORKGUARD_FREEZE_GC``,
    ``FORKGUARD_RESILIENT`` and ``FORKGUARD_ORM_FORK_CHECK`` first; arguments win over the
    environment.
    """
    global _installed
    load_environment()
    configure(
        mode=mode,
        trace=trace,
        freeze_gc=freeze_gc,
        resilient=resilient,
        orm_fork_check=orm_fork_check,
    )
    if settings.freeze_gc:
        _freeze.enable()
    else:
        _freeze.disable()
    if importlib.util.find_spec("sqlalchemy") is not None:
        from . import sqlalchemy as _sa

        _sa._INTEGRATION.install()
    _integration.discover()
    start("forkguard.install()", _origin.opening_site(2))
    if not _installed:
        log.debug("installed (mode=%s)", settings.mode)
    _installed = True


def protect(engine: Any) -> Any:
    """Make one engine fork-safe without touching any other; returns it for chaining."""
    load_environment()
    from . import sqlalchemy as _sa

    protected = _sa._protect(engine)
    start("forkguard.protect()", _origin.opening_site(2))
    return protected


def track(conn: Any, *, port: int | None = None) -> Any:
    """Guard a DB-API connection made without SQLAlchemy; returns it for chaining."""
    if conn is None or not hasattr(conn, "close"):
        raise TypeError(f"forkguard.track() takes a DB-API connection, not {conn!r}")
    site = _origin.opening_site(2)
    _registry.track(conn, port=port, opened_at=site, found=True)
    start("forkguard.track()", site)
    return conn


def start(caller: str, site: str | None) -> None:
    """Listen for forks; if this process already came out of one, handle it now."""
    _fork.set_pipeline(_pipeline.after_fork)
    _fork.set_before_fork(_pipeline.before_fork)
    _fork.activate()
    parent = _fork.pending_fork()
    # The owners of what this process holds but did not open: connections, then client sockets.
    inherited = [s.owner_pid for s in _registry.inherited() if not s.neutralized]
    inherited += [s.owner_pid for s in _sockets.inherited() if not s.neutralized]
    if parent is None and inherited:
        parent = inherited[0]  # forkguard itself was imported after the fork
    if parent is None:
        return
    _fork.handle_late(parent)
    if inherited:
        _stats.counters.late_installs += 1
        log.warning(
            "%s ran in pid %d after it was forked from pid %d (called at %s). "
            "It neutralized %d inherited connection(s) now, but code that ran in this process "
            "before it could have used them. Move it before the fork: to the top of the module "
            "your server imports (or gunicorn.conf.py).",
            caller,
            os.getpid(),
            parent,
            site or "an unknown line",
            len(inherited),
        )


def uninstall() -> None:
    """Undo :func:`install` and :func:`protect`: no more hooks run after this."""
    global _installed
    _integration.uninstall_all()
    _freeze.disable()
    _fork.deactivate()
    _registry.clear()
    _sockets.clear()
    _installed = False


def is_installed() -> bool:
    return _installed


def stats() -> dict[str, int]:
    """This process's counters: forks seen, connections neutralized, pools replaced, ..."""
    _fork.check()
    return _stats.counters.as_dict()
