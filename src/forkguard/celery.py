"""Celery: nothing to add beyond ``forkguard.install()`` in the module that makes your app.

Celery's prefork pool (billiard) forks with ``os.fork()``, so forkguard's at-fork hook runs in
every pool process before any task: inherited connections are silenced at the socket level,
SQLAlchemy engines get fresh pools, Django's connections are dropped without IO, and a broker
connection over py-amqp (RabbitMQ) the process inherited answers "not connected" and raises
on use (:mod:`forkguard.amqp`), so Celery's own after-fork ``collect()`` of its producer pool
sends nothing and shuts down nothing the parent still uses. No
``worker_process_init`` handler is needed (one that calls ``forkguard.install()`` works too,
later than needed: forkguard then logs a WARNING asking to move it), and Celery's own Django
fixup (which ``os.close()``\\ s inherited fds) then finds nothing left to close.

:func:`install` is the same thing spelled for Celery users, plus one belt-and-braces check: a
pool process runs forkguard's fork handling on ``worker_process_init`` if no fork hook ran yet
(a pool that forks from C). It costs one byte read per pool process start.
"""

from __future__ import annotations

from typing import Any

from . import _fork
from ._api import install as _install_forkguard

__all__ = ["install"]

_connected = False


def _on_worker_process_init(**kwargs: Any) -> None:
    _fork.check()


def install(**options: Any) -> None:
    """``forkguard.install(**options)`` for a Celery worker (idempotent); call it where the
    app is made. Takes exactly ``forkguard.install()``'s options."""
    global _connected
    _install_forkguard(**options)
    if not _connected:
        from celery.signals import worker_process_init

        worker_process_init.connect(_on_worker_process_init, weak=False)
        _connected = True
