"""asyncio engines across fork: SQLAlchemy's ``create_async_engine`` with asyncpg or aiomysql.

``forkguard.install()`` makes an ``AsyncEngine`` fork-safe like any other engine: in a child (a
gunicorn uvicorn worker, say) each inherited connection's socket is pointed at /dev/null, the
pool holds a stand-in instead, and the engine gets a fresh pool whose connections are opened on
the worker's own event loop. The inherited driver objects are also cut loose from the parent's
event loop (the core's per-driver ``detach``): aiomysql's ``Connection.__del__`` would otherwise
close its transport through that loop - usually closed by ``asyncio.run()`` already - and print
``RuntimeError: Event loop is closed`` in every worker. asyncpg needs nothing.

:func:`install` is ``forkguard.install()`` under the name asyncio users look for.
"""

from __future__ import annotations

from ._api import install, uninstall

__all__ = ["install", "uninstall"]
