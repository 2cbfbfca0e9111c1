"""SQLAlchemy integration: pool events in, fork-safe engines out.

Everything here goes through SQLAlchemy's own hooks: pool events (which, unlike engine or
connection events, keep ``execute()`` on SQLAlchemy's fast path), two session events
(``after_begin`` to know which sessions hold connections, ``do_orm_execute`` to notice a fork
that ran no hook) and, on SQLAlchemy 2, the dialect-level ``handle_error``. Per fork, in the
child:

1. every inherited DB-API connection is silenced at the socket level (``_registry``);
2. wherever a pool record or a checked-out connection still holds one, it is swapped for an
   :class:`~forkguard._neutralize.InheritedConnection` stand-in, so SQLAlchemy's own reset,
   rollback and close calls never reach the driver;
3. in ``repair``/``warn`` mode, sessions that were inside a transaction (and so hold an
   inherited connection) are invalidated, and every engine gets a fresh pool
   (``engine.dispose(close=False)``), so the next use opens the child's own connection;
   in ``strict`` mode, the first use of an inherited connection raises
   :class:`~forkguard.InheritedConnectionError` instead.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import weakref
from typing import Any, Callable

import sqlalchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from . import _fork, _origin, _registry, _stats
from ._config import settings
from ._errors import InheritedConnectionError
from ._neutralize import InheritedConnection

log = logging.getLogger("forkguard")

_SA_2 = int(sqlalchemy.__version__.split(".", 1)[0]) >= 2
_DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


class InheritedConnectionDisconnect(InheritedConnectionError, sa_exc.DisconnectionError):
    """In repair mode an inherited connection reads to SQLAlchemy as a disconnect, so a
    checkout (including a pre-ping) quietly replaces it with a fresh connection."""


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_listeners: list[tuple[Any, str, Callable[..., Any]]] = []


# ---- what an engine looks like to the outside ------------------------------------------------


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _engine_on_stack(max_depth: int = 40) -> Engine | None:
    """The Engine whose ``raw_connection()`` (or Connection) is opening this connection.

    Pool events name the pool, not the engine; the engine is always a few frames up.
    """
    frame = sys._getframe(2)
    depth = 0
    while frame is not None and depth < max_depth:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Engine):
            return owner
        engine = getattr(owner, "engine", None) if owner is not None else None
        if isinstance(engine, Engine) and type(owner).__module__.startswith("sqlalchemy."):
            return engine
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return None


def _register_engine(engine: Engine) -> None:
    _engines.add(engine)
    if settings.resilient and not engine.pool._pre_ping:
        # Pool.recreate() copies the flag, so fresh pools after a fork keep it.
        engine.pool._pre_ping = True


def _port_of(engine: Engine | None) -> int | None:
    if engine is None:
        return None
    return engine.url.port or _DEFAULT_PORTS.get(engine.url.get_backend_name())


# ---- pool events -------------------------------------------------------------------------------


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    _fork.check()
    engine = _engine_on_stack()
    if engine is not None:
        _register_engine(engine)
    _registry.track(
        dbapi_connection,
        url=safe_url(engine) if engine is not None else None,
        port=_port_of(engine),
        record=record,
        opened_at=_origin.opening_site(2),
        stack=_origin.opening_stack(2) if settings.trace else None,
    )


def _on_checkout_checked(
    dbapi_connection: Any,
    record: Any,
    proxy: Any,
    _check: Callable[[], bool] = _fork.check,
    _stand_in: type[InheritedConnection] = InheritedConnection,
) -> None:
    """A fork check and a type check: a fork that ran no hook, or a stand-in being handed out.

    Bound as default arguments, ``_fork.check`` and the stand-in class are local lookups;
    SQLAlchemy calls this with three positional arguments, so they are never overridden.
    """
    if _check():
        dbapi_connection = proxy.dbapi_connection
    if type(dbapi_connection) is _stand_in:
        raise dbapi_connection.make_error()


# Set where nothing is left for a checkout to catch: this process has handled its forks and no
# pool in it can hand out a stand-in unrecycled (see after_fork_in_child). Every child reads 0
# here until forkguard has handled its fork, however it was forked.
_checkout_clear = _fork.ChildFlag.new()
# Strict mode leaves stand-ins in the pools of a child, for their checkout to raise.
_stand_ins_to_refuse = False


def _make_checkout_listener() -> Callable[[Any, Any, Any], None]:
    flag = _checkout_clear
    if flag is None:  # no MADV_WIPEONFORK: every checkout takes the checked path (getpid)
        return _on_checkout_checked
    page, index, checked = flag.page, flag.index, _on_checkout_checked

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        """The one listener on the checkout hot path: one byte read, nothing else.

        SQLAlchemy already leaves its checkout fast path for any ``checkout`` listener (about
        50 bytecodes of its own); what forkguard adds to that is this read.
        """
        if page[index]:
            return
        checked(dbapi_connection, record, proxy)

    return on_checkout


_on_checkout = _make_checkout_listener()


def _mark_checkout_clear() -> None:
    """Let checkouts skip the checked path here, once any fork of this process is handled."""
    if _checkout_clear is None:
        return
    # A fork not handled yet is handled first: after_fork_in_child decides _stand_ins_to_refuse.
    _fork.check()
    if not _stand_ins_to_refuse:
        _checkout_clear.set()


def _on_handle_error(context: Any) -> None:
    # SQLAlchemy wraps non-DB-API errors raised while it builds a statement (our stand-in's
    # cursor()) in StatementError; hand the user the named error instead.
    if isinstance(context.original_exception, InheritedConnectionError):
        raise context.original_exception


def _on_io(dbapi_connection: Any, *args: Any) -> None:
    """invalidate / detach: SQLAlchemy is about to talk to the connection (rare events)."""
    _fork.check()


def _on_close(dbapi_connection: Any, *args: Any) -> None:
    if not _fork.check():
        _registry.forget(dbapi_connection)


# No ``reset`` listener: it would run on every checkin (SQLAlchemy builds a PoolResetState per
# dispatch, ~2 µs here) to cover only a connection checked out across a fork that ran no hook
# and returned before any checkout, ORM execute or GC; and even then a Connection inside a
# transaction rolls back through the dialect before the pool's reset. See docs/benchmarks.md.
_POOL_EVENTS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("connect", _on_connect),
    ("checkout", _on_checkout),
    ("invalidate", _on_io),
    ("soft_invalidate", _on_io),
    ("detach", _on_io),
    ("close", _on_close),
    ("close_detached", _on_close),
)


def _track_session(session: Any, transaction: Any, connection: Any) -> None:
    _sessions.add(session)


def _on_orm_execute(orm_execute_state: Any) -> None:
    # A session can hold a connection across a fork that ran no hook (a fork from C) and use
    # it without any pool event; this is the one place such a session passes through first.
    _fork.check()


# ---- the child side ---------------------------------------------------------------------------


def _error_for(state: _registry.TrackedConnection) -> Callable[[], Exception]:
    def make() -> Exception:
        strict = settings.mode == "strict"
        message = (
            f"forkguard: pid {os.getpid()} tried to use a database connection it inherited "
            f"through fork(): {state.describe()}. Its socket belongs to pid {state.owner_pid}; "
            "forkguard has cut this process off from it. Open connections after the fork "
            "(not at import time), or run `forkguard doctor` to find where."
        ) + state.stack_text()
        if strict:
            _stats.counters.strict_violations += 1
        cls = InheritedConnectionError if strict else InheritedConnectionDisconnect
        return cls(message, parent_pid=state.owner_pid, url=state.url, opened_at=state.opened_at)

    return make


def _swap_in_stand_in(state: _registry.TrackedConnection, conn: Any) -> None:
    """Replace ``conn`` wherever SQLAlchemy holds it: its pool record and checked-out proxy."""
    record = state.record_ref() if state.record_ref is not None else None
    if record is None or getattr(record, "dbapi_connection", None) is not conn:
        return
    stand_in = InheritedConnection(state.describe(), _error_for(state))
    fairy_ref = getattr(record, "fairy_ref", None)
    fairy = fairy_ref() if fairy_ref is not None else None
    record.dbapi_connection = stand_in
    if fairy is not None and getattr(fairy, "dbapi_connection", None) is conn:
        fairy.dbapi_connection = stand_in
    if settings.mode != "strict":
        # SQLAlchemy's own soft invalidation: the record keeps the stand-in now and recycles it
        # (close, a no-op; then a fresh connect) at its next checkout, from whatever pool still
        # holds it (an engine's old pool, a pool without an engine). So no checkout needs to
        # look for stand-ins, and the checkout listener can stay one byte read.
        record.invalidate(soft=True)


def _reset_sessions() -> int:
    # A session inside a transaction right after a fork can only hold an inherited connection:
    # any new checkout would have run our checkout hook first.
    count = 0
    for session in list(_sessions):
        try:
            if session.in_transaction():
                session.invalidate()
                count += 1
        except Exception:
            log.exception("forkguard: could not reset session %r after fork", session)
    return count


def _replace_pools() -> int:
    count = 0
    for engine in list(_engines):
        try:
            engine.dispose(close=False)
            count += 1
        except Exception:
            log.exception("forkguard: could not give %s a fresh pool", safe_url(engine))
    return count


def after_fork_in_child(parent_pid: int) -> None:
    global _stand_ins_to_refuse
    inherited = _registry.inherited()
    for state in inherited:
        conn = state.connection()
        if conn is not None:
            _swap_in_stand_in(state, conn)
    if settings.mode == "strict" and inherited:
        _stand_ins_to_refuse = True
    _mark_checkout_clear()
    if settings.mode == "strict":
        if inherited:
            log.info(
                "forkguard: pid %d inherited %d connection(s) from pid %d; strict mode will "
                "refuse their use",
                os.getpid(),
                len(inherited),
                parent_pid,
            )
        return
    sessions = _reset_sessions()
    pools = _replace_pools()
    _stats.counters.sessions_reset += sessions
    _stats.counters.pools_replaced += pools
    if settings.mode == "warn":
        for state in inherited:
            log.warning(
                "forkguard: pid %d inherited a %s; neutralized it and opened a fresh pool.%s",
                os.getpid(),
                state.describe(),
                state.stack_text(),
            )
    level = logging.INFO if inherited or sessions else logging.DEBUG
    log.log(
        level,
        "forkguard: pid %d forked from %d: neutralized %d inherited connection(s), "
        "gave %d engine(s) a fresh pool, reset %d session(s)",
        os.getpid(),
        parent_pid,
        len(inherited),
        pools,
        sessions,
    )


# ---- install / protect / uninstall ------------------------------------------------------------


def _listen(target: Any, name: str, fn: Callable[..., Any]) -> None:
    event.listen(target, name, fn)
    _listeners.append((target, name, fn))


def _track_record(record: Any, engine: Engine | None) -> None:
    _registry.track(
        record.dbapi_connection,
        url=safe_url(engine) if engine is not None else None,
        port=_port_of(engine),
        record=record,
    )


def _adopt(engines: list[Engine]) -> None:
    """Track engines, and the connections they hold, that existed before forkguard did."""
    from sqlalchemy.pool.base import _ConnectionRecord

    by_pool = {id(engine.pool): engine for engine in engines}
    for engine in engines:
        _register_engine(engine)
    for obj in gc.get_objects():
        if issubclass(type(obj), _ConnectionRecord) and obj.dbapi_connection is not None:
            owner = by_pool.get(id(getattr(obj, "_ConnectionRecord__pool", None)))
            if owner is not None:
                _track_record(obj, owner)


def install() -> None:
    global _installed
    if not _installed:
        from sqlalchemy.orm import Session

        for name, fn in _POOL_EVENTS:
            _listen(Pool, name, fn)
        _listen(Session, "after_begin", _track_session)
        _listen(Session, "do_orm_execute", _on_orm_execute)
        if _SA_2:
            # A dialect-level event in 2.x: it leaves execute() on the fast path.
            _listen(Engine, "handle_error", _on_handle_error)
        _fork.add_child_handler(after_fork_in_child)
        _mark_checkout_clear()
        _installed = True
        # type(), not isinstance(): lazy proxies (Django's settings, werkzeug's LocalProxy)
        # answer __class__ by evaluating themselves, which can raise or have side effects.
        _adopt([obj for obj in gc.get_objects() if issubclass(type(obj), Engine)])
    for engine in list(_engines):
        _register_engine(engine)  # a later install() may have turned on ``resilient``


def protect(engine: Any) -> Engine:
    """Guard one engine (an ``Engine`` or an ``AsyncEngine``); returns the sync engine."""
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, Engine):
        raise TypeError(
            "forkguard.protect() takes a SQLAlchemy Engine or AsyncEngine, "
            f"not {type(engine).__name__}"
        )
    if sync_engine in _engines and _pool_guarded(sync_engine):
        return sync_engine
    if not _installed:
        for name, fn in _POOL_EVENTS:
            if not event.contains(sync_engine.pool, name, fn):
                _listen(sync_engine, name, fn)
        _fork.add_child_handler(after_fork_in_child)
        _mark_checkout_clear()
    _adopt([sync_engine])
    return sync_engine


def _pool_guarded(engine: Engine) -> bool:
    return _installed or event.contains(engine.pool, "checkout", _on_checkout)


def uninstall() -> None:
    global _installed
    for target, name, fn in reversed(_listeners):
        if event.contains(target, name, fn):
            event.remove(target, name, fn)
    _listeners.clear()
    _fork.remove_child_handler(after_fork_in_child)
    _engines.clear()
    _sessions.clear()
    _installed = False


def is_installed() -> bool:
    return _installed
