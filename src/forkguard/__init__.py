"""forkguard: database connections that stay safe across ``fork()``.

Add two lines where your app starts (before the pre-fork server forks)::

    import forkguard
    forkguard.install()

Every SQLAlchemy engine, made before or after that call, is then fork-safe: a child never
writes a byte to a socket it inherited, gets a fresh pool, and sessions that held an inherited
connection start over. The parent keeps all its connections.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from . import _fork, _freeze, _registry, _stats
from ._config import MODES, configure, load_environment, settings
from ._errors import ConfigurationError, ForkguardError, InheritedConnectionError
from ._guarded import Guarded

__all__ = [
    "MODES",
    "ConfigurationError",
    "ForkguardError",
    "Guarded",
    "InheritedConnectionError",
    "configure",
    "install",
    "is_installed",
    "protect",
    "stats",
    "track",
    "uninstall",
]

__version__ = "0.1.0"

log = logging.getLogger("forkguard")
log.addHandler(logging.NullHandler())

_installed = False


def install(
    *,
    mode: str | None = None,
    trace: bool | None = None,
    freeze_gc: bool | None = None,
    resilient: bool | None = None,
) -> None:
    """Make every SQLAlchemy engine in this process fork-safe (idempotent).

    ``freeze_gc=True`` also freezes the heap before each fork, so workers keep sharing the
    master's memory (see ``docs/memory.md``). ``resilient=True`` turns on pool pre-ping for
    every guarded engine, so connections the server dropped (idle timeout, restart, KILL) are
    replaced on checkout. Reads ``FORKGUARD_MODE``, ``FORKGUARD_TRACE``, ``FORKGUARD_FREEZE_GC``
    and ``FORKGUARD_RESILIENT`` first; arguments win over the environment.
    """
    global _installed
    load_environment()
    configure(mode=mode, trace=trace, freeze_gc=freeze_gc, resilient=resilient)
    _registry.activate()
    if settings.freeze_gc:
        _freeze.enable()
    else:
        _freeze.disable()
    if _sqlalchemy_available():
        from . import sqlalchemy as _sa

        _sa.install()
    if "django" in sys.modules:
        # Django is imported (settings.py, wsgi.py, manage.py): guard its connections too.
        from . import django as _dj

        _dj.install()
    if not _installed:
        log.debug("forkguard: installed (mode=%s)", settings.mode)
    _installed = True


def protect(engine: Any) -> Any:
    """Make one engine fork-safe without touching any other; returns it for chaining."""
    load_environment()
    _registry.activate()
    from . import sqlalchemy as _sa

    _sa.protect(engine)
    return engine


def uninstall() -> None:
    """Undo :func:`install` and :func:`protect`: no more hooks run after this."""
    global _installed
    if _sqlalchemy_available():
        from . import sqlalchemy as _sa

        _sa.uninstall()
    for name in ("forkguard.django", "forkguard.asyncio"):
        integration = sys.modules.get(name)
        if integration is not None:
            integration.uninstall()
    _freeze.disable()
    _registry.deactivate()
    _installed = False


def is_installed() -> bool:
    return _installed


def track(conn: Any, *, port: int | None = None) -> Any:
    """Guard a DB-API connection made without SQLAlchemy; returns it for chaining.

    In a child, the connection's socket is pointed at /dev/null before the driver can close or
    free it, so the parent's session survives whatever the child does with the object (its own
    use of it fails, as on a closed connection). ``port`` helps find the socket of a driver
    forkguard has no adapter for. For a connection each process can use, see :class:`Guarded`.
    """
    from ._origin import opening_site

    if conn is None or not hasattr(conn, "close"):
        raise TypeError(f"forkguard.track() takes a DB-API connection, not {conn!r}")
    _registry.activate()
    _registry.track(conn, port=port, opened_at=opening_site(2))
    return conn


def stats() -> dict[str, int]:
    """This process's counters: forks seen, connections neutralized, pools replaced, ..."""
    _fork.check()
    return _stats.counters.as_dict()


def _sqlalchemy_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sqlalchemy") is not None
