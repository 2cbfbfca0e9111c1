"""What the probe records while the app imports: connections, checkouts, sockets, threads.

Installed before anything of the user's runs, and invisible to the app:

* the DB-API ``connect`` functions of the drivers that are installed are wrapped, so every
  connection is recorded with the user's ``file:line`` and stack and with its arguments (to ask
  its server for ``max_connections`` / ``wait_timeout`` later, over a separate connection);
* an audit hook records where every Python socket was connected or bound;
* ``threading.Thread.start`` and ``sqlalchemy.create_engine`` record their caller, and a pool
  ``checkout`` listener the line that took each pooled connection.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import _drivers
from ._clients import client_library
from ._sites import site_and_stack
from ._sockets import fd_of, format_address

log = logging.getLogger("forkguard.doctor")


@dataclass(eq=False)
class ConnRecord:
    driver: str
    site: str | None
    stack: list[str]
    phase: str
    reconnect: Callable[[], Any] | None
    ref: weakref.ref[Any] | None = None
    strong: Any = None

    def get(self) -> Any:
        if self.ref is not None:
            return self.ref()
        return self.strong


@dataclass
class SocketRecord:
    event: str
    address: str
    site: str | None
    stack: list[str]
    phase: str
    library: str | None = None  # the client library that opened it (._clients.CLIENTS)


@dataclass
class Recorder:
    phase: str = "startup"
    enabled: bool = True
    connections: list[ConnRecord] = field(default_factory=list)
    sockets: dict[int, SocketRecord] = field(default_factory=dict)  # by socket inode
    engine_sites: dict[int, tuple[str | None, list[str]]] = field(default_factory=dict)
    thread_sites: dict[int, tuple[str | None, list[str], str]] = field(default_factory=dict)
    engines: list[weakref.ref[Any]] = field(default_factory=list)
    # pool record -> where in the user's code it was last checked out (who holds it now)
    checkouts: weakref.WeakKeyDictionary[Any, tuple[str | None, list[str]]] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def add_connection(self, conn: Any, reconnect: Callable[[], Any] | None) -> None:
        if not self.enabled or conn is None:
            return
        for rec in self.connections:
            if rec.get() is conn:
                return
        site, stack = site_and_stack(3)
        rec = ConnRecord(
            driver=_drivers.driver_name(conn),
            site=site,
            stack=stack,
            phase=self.phase,
            reconnect=reconnect,
        )
        try:
            rec.ref = weakref.ref(conn)
        except TypeError:
            rec.strong = conn  # sqlite3: checked with sys.getrefcount later
        self.connections.append(rec)


recorder = Recorder()


def install() -> list[str]:
    """Install every recorder; the names of the driver modules whose connect is wrapped."""
    hooked = _install_driver_hooks() + _install_async_driver_hooks()
    _install_sqlalchemy_hook()
    _install_thread_hook()
    sys.addaudithook(_audit)
    return hooked


# ---- DB-API drivers ---------------------------------------------------------------------------

_DRIVER_CONNECTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pymysql", ("connect", "Connect")),
    ("MySQLdb", ("connect", "Connect", "Connection")),
    ("psycopg2", ("connect",)),
    ("psycopg", ("connect",)),
    ("sqlite3", ("connect",)),
    ("mysql.connector", ("connect", "Connect")),
)

# Looked up at call time: asyncpg.connect by SQLAlchemy's dialect, asyncpg.connection.connect
# by asyncpg's own pools; aiomysql.connect() (not a coroutine) awaits connection._connect.
_ASYNC_CONNECTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("asyncpg", ("connect",)),
    ("asyncpg.connection", ("connect",)),
    ("aiomysql.connection", ("_connect",)),
)


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = original(*args, **kwargs)
        recorder.add_connection(conn, functools.partial(original, *args, **kwargs))
        return conn

    connect.__forkguard_doctor__ = True  # type: ignore[attr-defined]
    return connect


def _wrap_async_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """The same for a driver whose connect is a coroutine function (asyncpg, aiomysql)."""

    @functools.wraps(original)
    async def connect(*args: Any, **kwargs: Any) -> Any:
        conn = await original(*args, **kwargs)
        recorder.add_connection(conn, None)  # the limits are asked through the engine
        return conn

    connect.__forkguard_doctor__ = True  # type: ignore[attr-defined]
    return connect


def _optional_module(module_name: str) -> types.ModuleType | None:
    if importlib.util.find_spec(module_name.split(".")[0]) is None:
        return None
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # a broken optional driver must not stop the probe
        log.debug("forkguard doctor: cannot import %s: %s", module_name, exc)
        return None


def _wrap_attrs(
    connects: tuple[tuple[str, tuple[str, ...]], ...],
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> list[tuple[str, types.ModuleType]]:
    """Wrap each module's connect attributes (aliases of one function share one wrapper);
    the modules that are installed."""
    hooked = []
    for module_name, attrs in connects:
        module = _optional_module(module_name)
        if module is None:
            continue
        wrapped: dict[int, Callable[..., Any]] = {}
        for attr in attrs:
            original = getattr(module, attr, None)
            if original is None or getattr(original, "__forkguard_doctor__", False):
                continue
            if id(original) not in wrapped:
                wrapped[id(original)] = wrap(original)
            setattr(module, attr, wrapped[id(original)])
        hooked.append((module_name, module))
    return hooked


def _install_driver_hooks() -> list[str]:
    hooked = _wrap_attrs(_DRIVER_CONNECTS, _wrap_connect)
    for module_name, module in hooked:
        if module_name == "psycopg":
            _hook_psycopg_classmethod(module)
    return [module_name for module_name, _ in hooked]


def _install_async_driver_hooks() -> list[str]:
    hooked = _wrap_attrs(_ASYNC_CONNECTS, _wrap_async_connect)
    return sorted({module_name.split(".")[0] for module_name, _ in hooked})


def _hook_psycopg_classmethod(module: Any) -> None:
    # Django (and others) call psycopg.Connection.connect(), not psycopg.connect().
    cls = module.Connection
    descriptor = cls.__dict__.get("connect")
    func = getattr(descriptor, "__func__", None)
    if func is None:
        return

    def connect(klass: Any, *args: Any, **kwargs: Any) -> Any:
        conn = func(klass, *args, **kwargs)
        recorder.add_connection(conn, functools.partial(func, klass, *args, **kwargs))
        return conn

    cls.connect = classmethod(connect)


# ---- sockets, threads, SQLAlchemy -------------------------------------------------------------


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in ("socket.connect", "socket.bind") or not recorder.enabled:
        return
    try:
        sock, address = args[0], args[1]
        inode = os.fstat(sock.fileno()).st_ino
        site, stack = site_and_stack(2)
        recorder.sockets[inode] = SocketRecord(
            event=event.split(".")[1],
            address=format_address(address),
            site=site,
            stack=stack,
            phase=recorder.phase,
            library=client_library(sys._getframe(1)),
        )
    except Exception:  # an audit hook that raises would break the app's own connect()
        log.debug("forkguard doctor: cannot record %s", event, exc_info=True)


def _install_thread_hook() -> None:
    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if recorder.enabled:
            site, stack = site_and_stack(2)
            recorder.thread_sites[id(self)] = (site, stack, recorder.phase)
        original(self)

    threading.Thread.start = start  # type: ignore[method-assign]


def _install_sqlalchemy_hook() -> None:
    if importlib.util.find_spec("sqlalchemy") is None:
        return
    import sqlalchemy
    import sqlalchemy.engine
    import sqlalchemy.engine.create
    import sqlalchemy.event
    import sqlalchemy.pool

    original = sqlalchemy.engine.create.create_engine

    @functools.wraps(original)
    def create_engine(*args: Any, **kwargs: Any) -> Any:
        engine = original(*args, **kwargs)
        if recorder.enabled:
            recorder.engine_sites[id(engine)] = site_and_stack(2)
            recorder.engines.append(weakref.ref(engine))
        return engine

    for module in (sqlalchemy, sqlalchemy.engine, sqlalchemy.engine.create):
        module.create_engine = create_engine  # type: ignore[attr-defined]
    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "checkout", _on_checkout)


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Every pool checkout: the line that took the connection (a Connection, a Session)."""
    if recorder.enabled:
        recorder.checkouts[record] = site_and_stack(2)


# ---- leaving ----------------------------------------------------------------------------------


def close_recorded() -> None:
    """Close every connection recorded, politely (no "aborted connection" in the server's log)."""
    for rec in recorder.connections:
        conn = rec.get()
        if conn is None:
            continue
        try:
            if rec.driver in _QUIT_MESSAGES:
                _say_goodbye(rec.driver, conn)
            else:
                conn.close()
        except Exception as exc:
            log.debug("forkguard doctor: closing %s failed: %s", rec.driver, exc)


# What an asyncio driver's close() sends (PostgreSQL Terminate, MySQL COM_QUIT). Its event
# loop is closed by now, so the bytes go straight to the socket; over TLS it is just closed.
_QUIT_MESSAGES = {"asyncpg": b"X\x00\x00\x00\x04", "aiomysql": b"\x01\x00\x00\x00\x01"}


def _say_goodbye(driver: str, conn: Any) -> None:
    inner = _drivers.unwrap(conn)
    writer = getattr(inner, "_writer", None)
    transport = getattr(inner, "_transport", None) or getattr(writer, "transport", None)
    fd = fd_of(inner)
    if fd is None or transport is None or transport.get_extra_info("ssl_object") is not None:
        return
    os.write(fd, _QUIT_MESSAGES[driver])
