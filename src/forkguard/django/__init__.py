"""Django integration: every ``django.db.connections[alias]`` becomes fork-safe.

Add one line to your settings::

    INSTALLED_APPS = [..., "forkguard.django"]

or call ``forkguard.install()`` once Django is imported (``wsgi.py``, after
``get_wsgi_application()``). Then, in every child of a pre-fork server (gunicorn ``--preload``,
uWSGI without ``lazy-apps``, Celery prefork, ``multiprocessing``):

1. every DB-API connection a ``DatabaseWrapper`` inherited is silenced at the socket level by
   the core (its fd now points at /dev/null), so nothing the driver does later reaches the
   parent's session;
2. each wrapper holding one lets go of it *without IO* and forgets its per-connection state
   (the bookkeeping ``DatabaseWrapper.close()`` and ``connect()`` reset), so Django opens the
   child's own connection on next use, exactly as after ``CONN_MAX_AGE`` expired.

Persistent connections (``CONN_MAX_AGE``) and ``CONN_HEALTH_CHECKS`` need nothing more: the
wrapper simply has no connection in the child. A fork inside ``transaction.atomic()`` leaves the
child's copy of that block unusable, as Django does when a connection is closed inside one
("Cannot open a new connection in an atomic block").

The parent is untouched. Wrappers are found through Django's ``connection_created`` signal, plus
a one-time scan at install for those opened earlier (an app whose ``ready()`` queried before
this one's), in every thread.
"""

from __future__ import annotations

import gc
import logging
import os
import weakref
from typing import Any

from .. import _drivers, _fork, _origin, _registry
from .._config import settings as _fg_settings
from .._neutralize import FdIdentity, keep_alive, neutralize_fd

__all__ = ["install", "is_installed", "uninstall"]

log = logging.getLogger("forkguard")

_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}
_DISPATCH_UID = "forkguard.django.track"
_REQUEST_UID = "forkguard.django.check"

# Every DatabaseWrapper that has held a connection in this process (any thread, any alias).
_wrappers: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False


# ---- the parent side: remember each connection as Django opens it -----------------------------


def _describe(wrapper: Any) -> tuple[str, int | None]:
    """A password-free URL for reports, and the server port (for drivers without an fd finder)."""
    s = getattr(wrapper, "settings_dict", None) or {}
    vendor = str(getattr(wrapper, "vendor", "") or "")
    host = s.get("HOST") or "localhost"
    try:
        port: int | None = int(s["PORT"]) if s.get("PORT") else _DEFAULT_PORTS.get(vendor)
    except (TypeError, ValueError):
        port = _DEFAULT_PORTS.get(vendor)
    user = f"{s.get('USER')}@" if s.get("USER") else ""
    where = f"{host}:{port}" if port else str(host)
    alias = getattr(wrapper, "alias", "?")
    return f"{vendor}://{user}{where}/{s.get('NAME') or ''} (django alias {alias!r})", port


def _track(wrapper: Any, opened_at: str | None) -> None:
    conn = getattr(wrapper, "connection", None)
    if conn is None:
        return
    _wrappers.add(wrapper)
    url, port = _describe(wrapper)
    _registry.track(
        conn,
        url=url,
        port=port,
        opened_at=opened_at,
        stack=_origin.opening_stack(3) if _fg_settings.trace else None,
    )


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    # A child that connects before any fork hook ran (a fork from C) notices the fork first, so
    # the connection it opens now is recorded as its own.
    _fork.check()
    _track(connection, _origin.opening_site(2))


def _check_fork(sender: Any = None, **kwargs: Any) -> None:
    """``request_started``: a child forked from C with no hook notices here, per request."""
    _fork.check()


def _adopt() -> None:
    """Track wrappers that opened their connection before this integration was installed."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    for obj in gc.get_objects():
        # type(), not isinstance(): Django's lazy proxies (settings) answer __class__ by
        # setting themselves up, which raises in a process that never configured Django.
        if issubclass(type(obj), BaseDatabaseWrapper) and obj.connection is not None:
            if _registry.lookup(obj.connection) is None:
                _track(obj, None)
            else:
                _wrappers.add(obj)


# ---- the child side: let go of inherited connections without IO ------------------------------


def _current_thread_wrappers() -> list[Any]:
    try:
        from django.conf import settings
        from django.db import connections

        if not settings.configured:
            return []
        return list(connections.all(initialized_only=True))
    except Exception:  # Django half set up: nothing to find in this thread
        return []


def _silence_untracked(conn: Any) -> None:
    """A connection forkguard never saw (it cannot happen through the signal or the scan)."""
    fd = _drivers.known_fd(conn)
    identity = FdIdentity.of(fd) if fd is not None else None
    if identity is not None and neutralize_fd(identity):
        return
    # No socket we can silence: never let the child close or free it.
    keep_alive(conn)


def _forget_connection(wrapper: Any) -> None:
    """What ``close()`` + ``connect()`` reset on a wrapper, without touching the connection."""
    if wrapper.in_atomic_block:
        # As close() inside atomic(): the block can't go on, its exit drops the connection.
        wrapper.closed_in_transaction = True
        wrapper.needs_rollback = True
    else:
        wrapper.closed_in_transaction = False
        wrapper.needs_rollback = False
        wrapper.savepoint_ids = []
        wrapper.atomic_blocks = []
        wrapper.savepoint_state = 0
    wrapper.connection = None
    wrapper.run_on_commit = []
    wrapper.run_commit_hooks_on_set_autocommit_on = False
    wrapper.errors_occurred = False
    wrapper.health_check_done = False
    wrapper.close_at = None


def after_fork_in_child(parent_pid: int) -> None:
    """Child handler: drop every inherited connection a Django wrapper holds (no IO)."""
    pid = os.getpid()
    seen: set[int] = set()
    dropped = 0
    for wrapper in [*_wrappers, *_current_thread_wrappers()]:
        if id(wrapper) in seen:
            continue
        seen.add(id(wrapper))
        conn = getattr(wrapper, "connection", None)
        if conn is None:
            continue
        state = _registry.lookup(conn)
        if state is not None and state.owner_pid == pid:
            continue  # opened by this process after the fork
        if state is None:
            _silence_untracked(conn)
        try:
            _forget_connection(wrapper)
            dropped += 1
        except Exception:
            log.exception("forkguard: could not reset Django connection %r", wrapper.alias)
    if dropped:
        log.info(
            "forkguard: pid %d forked from %d: dropped %d inherited Django connection(s)",
            pid,
            parent_pid,
            dropped,
        )


# ---- install / uninstall ----------------------------------------------------------------------


def install() -> None:
    """Make Django's connections fork-safe in this process (idempotent).

    ``INSTALLED_APPS += ["forkguard.django"]`` calls this (and ``forkguard.install()``) from
    ``AppConfig.ready()``.
    """
    global _installed
    # Watch for forks; the socket-level neutralization always runs before our handler.
    _registry.activate()
    if _installed:
        return
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, dispatch_uid=_DISPATCH_UID)
    _check_before_close_old_connections()
    _fork.add_child_handler(after_fork_in_child)
    _installed = True
    _adopt()


def _check_before_close_old_connections() -> None:
    # Django closes obsolete connections on request_started (CONN_MAX_AGE); after a fork that
    # no hook reported, that close would reach the parent's session, so the pid check has to
    # run first: reconnect Django's receiver behind ours.
    from django.core.signals import request_started
    from django.db import close_old_connections

    had_close = request_started.disconnect(close_old_connections)
    request_started.connect(_check_fork, dispatch_uid=_REQUEST_UID)
    if had_close:
        request_started.connect(close_old_connections)


def uninstall() -> None:
    global _installed
    if not _installed:
        return
    from django.core.signals import request_started
    from django.db.backends.signals import connection_created

    connection_created.disconnect(dispatch_uid=_DISPATCH_UID)
    request_started.disconnect(dispatch_uid=_REQUEST_UID)
    _fork.remove_child_handler(after_fork_in_child)
    _wrappers.clear()
    _installed = False


def is_installed() -> bool:
    return _installed
