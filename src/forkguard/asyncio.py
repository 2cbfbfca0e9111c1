"""asyncio engines across fork: SQLAlchemy's ``create_async_engine`` with asyncpg or aiomysql.

``forkguard.install()`` already makes an ``AsyncEngine`` fork-safe like any other engine: in a
child (a gunicorn uvicorn worker, say) each inherited connection's socket is pointed at
/dev/null, the pool holds a stand-in instead, and the engine gets a fresh pool whose
connections are opened on the worker's own event loop.

What this module adds is quiet: the inherited driver objects are dropped in the child, and
aiomysql's ``Connection.__del__`` closes its transport through the event loop that opened it
- the parent's, usually already closed by ``asyncio.run()`` - which prints
``RuntimeError: Event loop is closed`` ("Exception ignored in ...") in every worker. No byte
reaches the server either way (the socket is /dev/null by then); :func:`install` detaches the
streams of inherited aiomysql connections so their finalizer has nothing to close. asyncpg
checks for a closed loop itself and needs nothing.
"""

from __future__ import annotations

from typing import Any

from . import _drivers, _fork, _registry
from . import install as _install_forkguard

__all__ = ["detach_inherited", "install"]

_installed = False


def _detach_aiomysql(conn: Any) -> None:
    # Connection.__del__ closes the transport only when ``_writer`` is set; the transport's
    # own finalizer then just closes the fd (already /dev/null), with no call on the loop.
    conn._writer = None
    conn._reader = None


_DETACH = {"aiomysql": _detach_aiomysql}


def detach_inherited(parent_pid: int = 0) -> None:
    """Child handler: detach inherited asyncio driver connections from their parent's loop."""
    for state in _registry.inherited():
        conn = state.connection()
        if conn is None:
            continue
        inner = _drivers.unwrap(conn)
        detach = _DETACH.get(type(inner).__module__.split(".", 1)[0])
        if detach is not None:
            detach(inner)


def install(*, mode: str | None = None, trace: bool | None = None) -> None:
    """``forkguard.install()``, plus detaching inherited asyncio connections (idempotent)."""
    global _installed
    _install_forkguard(mode=mode, trace=trace)
    if not _installed:
        # Before the SQLAlchemy handler drops the pools (and with them the driver objects).
        _fork.add_child_handler(detach_inherited, first=True)
        _installed = True


def uninstall() -> None:
    global _installed
    _fork.remove_child_handler(detach_inherited)
    _installed = False
