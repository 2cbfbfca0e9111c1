"""Django integration: every ``django.db.connections[alias]`` becomes fork-safe.

Add one line to your settings::

    INSTALLED_APPS = [..., "forkguard.django"]

or call ``forkguard.install()`` anywhere - before Django is imported (``gunicorn.conf.py``, the
top of ``wsgi.py``) or after: Django's connections are then guarded from the moment
``django.db`` is imported (the fork handling looks for it). Then, in every child of a
pre-fork server (gunicorn ``--preload``, uWSGI without ``lazy-apps``, Celery prefork,
``multiprocessing``):

1. every DB-API connection a ``DatabaseWrapper`` inherited is silenced at the socket level by
   the core (its fd now points at /dev/null), so nothing the driver does later reaches the
   parent's session;
2. each wrapper holding one lets go of it *without IO* and forgets its per-connection state
   (the bookkeeping ``DatabaseWrapper.close()`` and ``connect()`` reset), so Django opens the
   child's own connection on next use, exactly as after ``CONN_MAX_AGE`` expired. In
   ``strict`` mode the wrapper keeps a stand-in instead, whose first use raises
   :class:`~forkguard.InheritedConnectionError`; in ``warn`` mode each one is logged with the
   line that opened it.

Persistent connections (``CONN_MAX_AGE``) and ``CONN_HEALTH_CHECKS`` need nothing more: the
wrapper simply has no connection in the child. A fork inside ``transaction.atomic()`` leaves the
child's copy of that block unusable, as Django does when a connection is closed inside one
("Cannot open a new connection in an atomic block").

The parent is untouched. Wrappers are found through Django's ``connection_created`` signal, plus
a one-time, read-only search at install for those opened earlier (an app whose ``ready()``
queried before this one's), in every thread, plus the current thread's connections at the fork.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

from .. import _fork, _heap, _integration, _origin, _registry, _stats

# ``forkguard.install()`` itself: it installs this integration once ``django.db`` is imported.
from .._api import install
from .._config import settings as _fg_settings
from .._drivers import DEFAULT_PORTS as _DEFAULT_PORTS
from .._errors import InheritedConnectionError
from .._neutralize import InheritedConnection

__all__ = ["install", "uninstall"]

log = logging.getLogger("forkguard")

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


def _track(wrapper: Any, opened_at: str | None, **how: Any) -> _registry.TrackedConnection | None:
    conn = getattr(wrapper, "connection", None)
    if conn is None:
        return None
    _wrappers.add(wrapper)
    url, port = _describe(wrapper)
    return _registry.track(
        conn,
        url=url,
        port=port,
        opened_at=opened_at,
        stack=_origin.opening_stack(3) if _fg_settings.trace else None,
        **how,
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

    for wrapper in _heap.instances_of(BaseDatabaseWrapper):
        if wrapper.connection is None:
            continue
        if _registry.lookup(wrapper.connection) is None:
            _track(wrapper, None, found=True)
        else:
            _wrappers.add(wrapper)


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


def _strict_error(state: _registry.TrackedConnection) -> Exception:
    _stats.counters.strict_violations += 1
    return InheritedConnectionError.for_connection(state)


def _inherited_state(wrapper: Any, parent_pid: int) -> _registry.TrackedConnection | None:
    """The wrapper's connection if it is inherited, silenced (the core did the tracked ones)."""
    conn = getattr(wrapper, "connection", None)
    if conn is None or isinstance(conn, InheritedConnection):
        return None
    state = _registry.lookup(conn)
    if state is None:  # opened before forkguard was installed, in a thread the search missed
        state = _track(wrapper, None, owner_pid=parent_pid)
    if state is None or state.owner_pid == os.getpid():
        return None  # opened by this process after the fork
    _registry.neutralize(state)
    return state


def _let_go(wrapper: Any, state: _registry.TrackedConnection) -> None:
    if _fg_settings.mode == "strict":
        wrapper.connection = InheritedConnection(state.describe(), lambda: _strict_error(state))
        return
    # Kept allocated, not freed: freeing it would copy the pages it shares with the parent.
    _registry.let_go_inherited(state, wrapper.connection)
    _forget_connection(wrapper)
    if _fg_settings.mode == "warn":
        log.warning(
            "pid %d inherited a %s; forkguard neutralized it and Django opens its own.%s",
            os.getpid(),
            state.describe(),
            state.stack_text(),
        )


def _after_fork(parent_pid: int) -> None:
    """Child step: drop every inherited connection a Django wrapper holds (no IO)."""
    seen: set[int] = set()
    dropped = 0
    for wrapper in [*_wrappers, *_current_thread_wrappers()]:
        if id(wrapper) in seen:
            continue
        seen.add(id(wrapper))
        state = _inherited_state(wrapper, parent_pid)
        if state is not None:
            _let_go(wrapper, state)
            dropped += 1
    if dropped:
        log.info(
            "pid %d forked from %d: dropped %d inherited Django connection(s)",
            os.getpid(),
            parent_pid,
            dropped,
        )


# ---- install / uninstall ----------------------------------------------------------------------


def _install() -> None:
    global _installed
    if _installed:
        return
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, dispatch_uid=_DISPATCH_UID)
    _check_before_close_old_connections()
    _installed = True
    _integration.register(_INTEGRATION)
    _adopt()


def _check_before_close_old_connections() -> None:
    # Django closes obsolete connections on request_started (CONN_MAX_AGE); after a fork that
    # no hook reported, that close would reach the parent's session, so the fork check has to
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
    _wrappers.clear()
    _integration.unregister(_INTEGRATION.name)
    _installed = False


_INTEGRATION = _integration.Integration(
    "django", install=_install, uninstall=uninstall, after_fork=_after_fork
)
