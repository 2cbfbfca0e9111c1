"""SQLAlchemy integration: pool events in, fork-safe engines out.

Everything here goes through SQLAlchemy's own hooks: pool events (which, unlike engine or
connection events, keep ``execute()`` on SQLAlchemy's fast path), one session event
(``after_begin``, to know which sessions hold connections; it runs once per transaction, not
per statement) and, on SQLAlchemy 2, the dialect-level ``handle_error``. A per-statement
``do_orm_execute`` check for forks that ran no hook is opt-in (``orm_fork_check=True``). Per
fork, in the child, once the core has silenced every inherited socket:

1. wherever a pool record or a checked-out connection still holds an inherited connection, it
   is swapped for an :class:`~forkguard._neutralize.InheritedConnection` stand-in, so
   SQLAlchemy's own reset, rollback and close calls never reach the driver;
2. in ``repair``/``warn`` mode, sessions that were inside a transaction (and so hold an
   inherited connection) are invalidated, and every engine gets a fresh pool
   (``engine.dispose(close=False)``), so the next use opens the child's own connection;
   in ``strict`` mode, the first use of an inherited connection raises
   :class:`~forkguard.InheritedConnectionError` instead.

Which engine owns a pool: pool events name neither. forkguard learns it from the engines it
finds at install, from ``protect()``, from sessions (``after_begin`` names the connection) and,
for a pool it has not seen, once, by asking the garbage collector which engine holds that pool
(:mod:`forkguard._heap`; read-only, no frame is inspected).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Callable

import sqlalchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

try:
    from sqlalchemy.pool import ConnectionPoolEntry as _PoolRecord
except ImportError:  # SQLAlchemy 1.4 has no public name for a pool's connection record
    from sqlalchemy.pool.base import _ConnectionRecord as _PoolRecord  # type: ignore[assignment]

from . import _fork, _heap, _integration, _origin, _registry, _report, _stats

# ``forkguard.install()`` itself: every engine, made before or after it, is fork-safe.
from ._api import install
from ._config import settings as _settings
from ._drivers import DEFAULT_PORTS as _DEFAULT_PORTS
from ._errors import InheritedConnectionError
from ._neutralize import InheritedConnection

__all__ = ["install", "protect", "uninstall"]

log = logging.getLogger("forkguard")

_SA_2 = int(sqlalchemy.__version__.split(".", 1)[0]) >= 2


class InheritedConnectionDisconnect(InheritedConnectionError, sa_exc.DisconnectionError):
    """In repair mode an inherited connection reads to SQLAlchemy as a disconnect, so a
    checkout (including a pre-ping) quietly replaces it with a fresh connection."""


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_engine_of_pool: weakref.WeakKeyDictionary[Pool, weakref.ref[Engine]] = weakref.WeakKeyDictionary()
# Sessions that began a transaction, and the engines of the connections they began it on.
# Sessions that have begun a transaction: after a fork, those still inside one are reset.
_sessions: weakref.WeakSet[Session] = weakref.WeakSet()
_installed = False
_listeners: list[tuple[Any, str, Callable[..., Any]]] = []


# ---- SQLAlchemy internals we cannot avoid (tests/test_sqlalchemy_internals.py pins them) ------


def _pool_of(record: Any) -> Pool | None:
    """The pool a connection record belongs to.

    Pool events hand listeners the record but not its pool, and ``ConnectionPoolEntry`` has no
    public way to reach it; ``_ConnectionRecord`` keeps it in a name-mangled attribute.
    """
    pool = getattr(record, "_ConnectionRecord__pool", None)
    return pool if isinstance(pool, Pool) else None


def _turn_on_pre_ping(pool: Pool) -> None:
    """``resilient=True`` on an engine created without ``pool_pre_ping``.

    SQLAlchemy takes pre-ping only as a ``create_engine()`` argument; the pool keeps it in
    ``_pre_ping``, which ``Pool.recreate()`` copies, so fresh pools after a fork keep it.
    """
    pool._pre_ping = True


# ---- engines and pools ------------------------------------------------------------------------


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _register_engine(engine: Engine) -> None:
    _engines.add(engine)
    _engine_of_pool[engine.pool] = weakref.ref(engine)
    if _settings.resilient:
        _turn_on_pre_ping(engine.pool)


class _NoEngine:
    """Remembered for a pool no engine holds (a pool used on its own): search it only once."""


_NO_ENGINE: Any = _NoEngine()


def _engine_for(pool: Pool | None) -> Engine | None:
    """The engine that owns ``pool``: known already, or found once by asking the collector."""
    if pool is None:
        return None
    ref = _engine_of_pool.get(pool)
    if ref is None:
        holders = _heap.holders_of(pool, Engine)
        for engine in holders:
            _register_engine(engine)
        if not holders:
            _engine_of_pool[pool] = weakref.ref(_NO_ENGINE)
        return holders[0] if holders else None
    found = ref()
    return found if isinstance(found, Engine) else None


def _port_of(engine: Engine | None) -> int | None:
    if engine is None:
        return None
    return engine.url.port or _DEFAULT_PORTS.get(engine.url.get_backend_name())


def _track_record(record: Any, engine: Engine | None, **extra: Any) -> None:
    _registry.track(
        record.dbapi_connection,
        url=_safe_url(engine) if engine is not None else None,
        port=_port_of(engine),
        record=record,
        **extra,
    )


# ---- pool events -------------------------------------------------------------------------------


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    _fork.check()
    _track_record(
        record,
        _engine_for(_pool_of(record)),
        opened_at=_origin.opening_site(2),
        stack=_origin.opening_stack(2) if _settings.trace else None,
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
# pool in it can hand out a stand-in unrecycled (see _after_fork). Every child reads 0
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
    # A fork not handled yet is handled first: _after_fork decides _stand_ins_to_refuse.
    _fork.check()
    if not _stand_ins_to_refuse and _fork.pending_fork() is None:
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


def _track_session(session: Session, transaction: Any, connection: Any) -> None:
    # after_begin runs once per transaction: a session seen before (a scoped session, request
    # after request) costs one lookup; which engines it uses is asked only after a fork.
    if session not in _sessions:
        _sessions.add(session)


def _on_orm_execute(orm_execute_state: Any) -> None:
    # A session can hold a connection across a fork that ran no hook (a fork from C) and use
    # it without any pool event; this is the one place such a session passes through first.
    # Opt-in (``orm_fork_check``): any do_orm_execute listener costs every Session.execute().
    _fork.check()


# ---- the child side ---------------------------------------------------------------------------


def _error_for(state: _registry.TrackedConnection) -> Callable[[], Exception]:
    def make() -> Exception:
        strict = _settings.mode == "strict"
        if strict:
            _stats.counters.strict_violations += 1
        cls = InheritedConnectionError if strict else InheritedConnectionDisconnect
        return cls.for_connection(state)

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
    _registry.let_go_inherited(state, conn)  # never freed here: its pages stay shared
    if _settings.mode != "strict":
        # SQLAlchemy's own soft invalidation: the record keeps the stand-in now and recycles it
        # (close, a no-op; then a fresh connect) at its next checkout, from whatever pool still
        # holds it (an engine's old pool, a pool without an engine). So no checkout needs to
        # look for stand-ins, and the checkout listener can stay one byte read.
        record.invalidate(soft=True)


def _guarded_engines() -> list[Engine]:
    return [engine for engine in list(_engines) if _pool_guarded(engine)]


def _reset_sessions(guarded: list[Engine]) -> int:
    # A session inside a transaction right after a fork can only hold an inherited connection:
    # any new checkout would have run our checkout hook first.
    count = 0
    for session in list(_sessions):
        try:
            if not session.in_transaction():
                continue
            if not _installed and not _bound_to(session, guarded):
                continue  # protect(): only sessions on the protected engines
            session.invalidate()
            count += 1
        except Exception:
            _report.step_failed(f"resetting session {session!r}")
    return count


def _bound_to(session: Session, engines: list[Engine]) -> bool:
    """Whether ``session`` is bound to one of ``engines`` (its default bind: no IO)."""
    try:
        return session.get_bind() in engines
    except Exception:  # no bind, or bound per mapper only: not one we were asked to protect
        return False


def _replace_pools(guarded: list[Engine]) -> int:
    count = 0
    for engine in guarded:
        try:
            engine.dispose(close=False)
            _register_engine(engine)  # the fresh pool is this engine's
            count += 1
        except Exception:
            _report.step_failed(f"giving {_safe_url(engine)} a fresh pool")
    return count


def _after_fork(parent_pid: int) -> None:
    global _stand_ins_to_refuse
    inherited = [s for s in _registry.inherited() if s.record_ref is not None]
    for state in inherited:
        conn = state.connection()
        if conn is not None:
            _swap_in_stand_in(state, conn)
    if _settings.mode == "strict" and inherited:
        _stand_ins_to_refuse = True
    _mark_checkout_clear()
    if _settings.mode == "strict":
        if inherited:
            log.info(
                "pid %d inherited %d SQLAlchemy connection(s) from pid %d; strict mode will "
                "refuse their use",
                os.getpid(),
                len(inherited),
                parent_pid,
            )
        return
    guarded = _guarded_engines()
    sessions = _reset_sessions(guarded)
    pools = _replace_pools(guarded)
    _stats.counters.sessions_reset += sessions
    _stats.counters.pools_replaced += pools
    _log_repair(inherited, parent_pid, pools, sessions)


def _log_repair(
    inherited: list[_registry.TrackedConnection], parent_pid: int, pools: int, sessions: int
) -> None:
    if _settings.mode == "warn":
        for state in inherited:
            log.warning(
                "pid %d inherited a %s; forkguard neutralized it and opened a fresh pool.%s",
                os.getpid(),
                state.describe(),
                state.stack_text(),
            )
    level = logging.INFO if inherited or sessions else logging.DEBUG
    log.log(
        level,
        "pid %d forked from %d: neutralized %d inherited connection(s), "
        "gave %d engine(s) a fresh pool, reset %d session(s)",
        os.getpid(),
        parent_pid,
        len(inherited),
        pools,
        sessions,
    )


# ---- install / protect / uninstall ------------------------------------------------------------


def _listen(target: Any, name: str, fn: Callable[..., Any]) -> None:
    if not event.contains(target, name, fn):
        event.listen(target, name, fn)
        if (target, name, fn) not in _listeners:
            _listeners.append((target, name, fn))


def _adopt_engines(engines: list[Engine]) -> None:
    """Track engines, and the connections their pools hold, that existed before forkguard."""
    for engine in engines:
        _register_engine(engine)
    for record in _heap.instances_of(_PoolRecord):
        if getattr(record, "dbapi_connection", None) is None:
            continue
        if _registry.lookup(record.dbapi_connection) is not None:
            continue
        owner = _engine_for(_pool_of(record))
        if owner is not None and owner in engines:
            _track_record(record, owner, found=True)


def _adopt_sessions(engines: list[Engine]) -> None:
    """Sessions already inside a transaction (Flask-SQLAlchemy 2 style, at import)."""
    for session in _heap.instances_of(Session):
        try:
            if not session.in_transaction():
                continue
            bind = session.get_bind()
        except Exception:
            continue  # a session with no bind, or one bound per mapper: nothing we can tell
        if isinstance(bind, Engine) and bind in engines:
            _sessions.add(session)


def _install() -> None:
    global _installed
    # Every call: something may have cleared class-level listeners since the last one
    # (SQLAlchemy's own test suite does, with Pool.dispatch._clear()); _listen skips present ones.
    for name, fn in _POOL_EVENTS:
        _listen(Pool, name, fn)
    _listen_sessions()
    if not _installed:
        _installed = True
        _integration.register(_INTEGRATION)
        _mark_checkout_clear()
        engines = _heap.instances_of(Engine)
        _adopt_engines(engines)
        _adopt_sessions(engines)
    for engine in list(_engines):
        _register_engine(engine)  # a later install() may have turned on ``resilient``
    _listen_orm_execute(_settings.orm_fork_check)


def _listen_orm_execute(wanted: bool) -> None:
    """The opt-in per-statement fork check (``orm_fork_check``; see _config.Settings)."""
    listening = event.contains(Session, "do_orm_execute", _on_orm_execute)
    if wanted and not listening:
        _listen(Session, "do_orm_execute", _on_orm_execute)
    elif listening and not wanted:
        event.remove(Session, "do_orm_execute", _on_orm_execute)
        _listeners.remove((Session, "do_orm_execute", _on_orm_execute))


def _listen_sessions() -> None:
    _listen(Session, "after_begin", _track_session)
    if _SA_2:
        # A dialect-level event in 2.x: it leaves execute() on the fast path.
        _listen(Engine, "handle_error", _on_handle_error)


def protect(engine: Any) -> Engine:
    """Guard one engine (an ``Engine`` or an ``AsyncEngine``); returns the sync engine."""
    from ._api import protect as protect_engine

    protected: Engine = protect_engine(engine)
    return protected


def _protect(engine: Any) -> Engine:
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
            _listen(sync_engine, name, fn)
        _listen_sessions()
        _integration.register(_INTEGRATION)
        _mark_checkout_clear()
    _adopt_engines([sync_engine])
    _adopt_sessions([sync_engine])
    return sync_engine


def _pool_guarded(engine: Engine) -> bool:
    # Pool events listened for on an engine stay with the engine (its pool's dispatch joins
    # the engine's), so they are asked of the engine, and survive dispose().
    return _installed or event.contains(engine, "checkout", _on_checkout)


def uninstall() -> None:
    global _installed
    for target, name, fn in reversed(_listeners):
        if event.contains(target, name, fn):
            event.remove(target, name, fn)
    _listeners.clear()
    _engines.clear()
    _engine_of_pool.clear()
    _sessions.clear()
    _integration.unregister(_INTEGRATION.name)
    _installed = False


_INTEGRATION = _integration.Integration(
    "sqlalchemy", install=_install, uninstall=uninstall, after_fork=_after_fork
)
