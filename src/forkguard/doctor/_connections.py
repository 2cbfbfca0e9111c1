"""The database connections still open after import, the engines that pool them, the server
each one talks to, and Django's DATABASES."""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .. import _drivers
from ._recorders import ConnRecord, recorder
from ._sockets import fd_of, inode, socket_facts

log = logging.getLogger("forkguard.doctor")

ASYNC_DRIVERS = ("asyncpg", "aiomysql")


def _sqlite_open(conn: Any) -> bool:
    conn.total_changes  # noqa: B018 - raises ProgrammingError once closed
    return True


# Whether a connection is still open, by the top-level module of its class.
_OPEN_CHECKS: dict[str, Callable[[Any], bool]] = {
    "pymysql": lambda conn: bool(conn.open),
    "MySQLdb": lambda conn: bool(conn.open),
    "psycopg2": lambda conn: int(conn.closed) == 0,
    "psycopg": lambda conn: not bool(conn.closed),
    "sqlite3": _sqlite_open,
    "mysql": lambda conn: bool(conn.is_connected()),
    "asyncpg": lambda conn: not bool(conn.is_closed()),
    "aiomysql": lambda conn: not bool(conn.closed),
}


def _is_open(conn: Any) -> bool:
    conn = _drivers.unwrap(conn)
    module = type(conn).__module__.split(".", 1)[0]
    check = _OPEN_CHECKS.get(module, lambda conn: _drivers.known_fd(conn) is not None)
    try:
        return check(conn)
    except Exception as exc:  # every driver raises its own error type for "closed"
        log.debug("forkguard doctor: %r looks closed: %s", conn, exc)
        return False


# ---- servers ----------------------------------------------------------------------------------

_DRIVER_FAMILIES = {
    "PyMySQL": "mysql",
    "mysqlclient": "mysql",
    "mysql-connector-python": "mysql",
    "psycopg2": "postgresql",
    "psycopg 3": "postgresql",
    "asyncpg": "postgresql",
    "aiomysql": "mysql",
}


def _family(backend: str) -> str | None:
    if backend in ("mysql", "mariadb"):
        return "mysql"
    if backend == "postgresql":
        return "postgresql"
    return None


def server_key_from_url(url: Any) -> str | None:
    """``mysql://host:port`` (or a Unix socket's path) for an engine's URL."""
    family = _family(url.get_backend_name())
    if family is None:
        return None
    host = url.host or "localhost"
    port = url.port or _drivers.DEFAULT_PORTS[family]
    socket_path = url.query.get("unix_socket") or url.query.get("host")
    if socket_path and str(socket_path).startswith("/"):
        return f"{family}://{socket_path}"
    return f"{family}://{host}:{port}"


def _server_key_for_conn(driver: str, peer: str | None) -> str | None:
    family = _DRIVER_FAMILIES.get(driver)
    if family is None or not peer:
        return None
    return f"{family}://{peer}"


# ---- engines and their pools ------------------------------------------------------------------


def all_engines() -> list[Any]:
    """Every SQLAlchemy engine alive: the ones recorded, then any other the GC knows."""
    if "sqlalchemy" not in sys.modules:
        return []
    from sqlalchemy.engine import Engine

    seen: dict[int, Any] = {}
    for ref in recorder.engines:
        engine = ref()
        if engine is not None:
            seen[id(engine)] = engine
    for obj in gc.get_objects():
        if isinstance(obj, Engine):
            seen.setdefault(id(obj), obj)
    return list(seen.values())


def engine_facts(engine: Any) -> dict[str, Any]:
    pool = engine.pool
    url = engine.url
    size: int | None = None
    overflow: int | None = None
    if hasattr(pool, "_max_overflow") and callable(getattr(pool, "size", None)):
        size = int(pool.size())
        overflow = int(pool._max_overflow)
    site, stack = recorder.engine_sites.get(id(engine), (None, []))
    return {
        "url": url.render_as_string(hide_password=True),
        "backend": url.get_backend_name(),
        "driver": url.get_driver_name(),
        "server": server_key_from_url(url),
        "pool": type(pool).__name__,
        "pool_size": size,
        "max_overflow": overflow,
        "pool_recycle": int(pool._recycle),
        "pool_pre_ping": bool(pool._pre_ping),
        "created_at": site,
        "created_stack": stack,
    }


@dataclass
class _Pooled:
    engine: Any
    record: Any
    checked_out: bool


def _sa_records() -> dict[int, _Pooled]:
    """id(DB-API connection) -> its pool entry, for every pooled connection. An asyncio
    engine pools an adapter: the driver's connection inside it is keyed too."""
    if "sqlalchemy" not in sys.modules:
        return {}
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool.base import _ConnectionRecord

    engines = {id(e.pool): e for e in all_engines() if isinstance(e, Engine)}
    found: dict[int, _Pooled] = {}
    for obj in gc.get_objects():
        if isinstance(obj, _ConnectionRecord) and obj.dbapi_connection is not None:
            pool = getattr(obj, "_ConnectionRecord__pool", None)
            checked_out = obj.fairy_ref is not None and obj.fairy_ref() is not None
            entry = _Pooled(engines.get(id(pool)), obj, checked_out)
            found[id(obj.dbapi_connection)] = entry
            found[id(_drivers.unwrap(obj.dbapi_connection))] = entry
    return found


def _forkguard_guards(conn: Any, pooled: _Pooled | None) -> bool:
    from .. import _registry

    if pooled is not None and _registry.lookup(pooled.record.dbapi_connection) is not None:
        return True  # an asyncio engine's adapter is what forkguard tracks
    return _registry.lookup(conn) is not None


# ---- the connections --------------------------------------------------------------------------


def collect_connections(db_inodes: set[int]) -> list[tuple[dict[str, Any], ConnRecord]]:
    """Each recorded connection still open, with its record; adds their sockets' inodes to
    ``db_inodes``."""
    pooled = _sa_records()
    result: list[tuple[dict[str, Any], ConnRecord]] = []
    for rec in list(recorder.connections):
        conn = rec.get()
        if conn is None:
            continue
        # sqlite3 takes no weak reference: if only we hold it, the app already dropped it.
        if rec.strong is not None and sys.getrefcount(conn) <= 3:
            continue
        if not _is_open(conn):
            continue
        entry = _connection_entry(rec, conn, pooled.get(id(conn)))
        fd_inode = inode(entry["fd"])
        if fd_inode is not None:
            db_inodes.add(fd_inode)
        result.append((entry, rec))
    return result


def _connection_entry(rec: ConnRecord, conn: Any, pooled: _Pooled | None) -> dict[str, Any]:
    fd = fd_of(conn)
    sock = socket_facts(fd) if fd is not None else {}
    peer = sock.get("peer")
    engine = pooled.engine if pooled is not None else None
    entry: dict[str, Any] = {
        "driver": rec.driver,
        "server": peer,
        "server_key": (
            server_key_from_url(engine.url)
            if engine is not None
            else _server_key_for_conn(rec.driver, peer)
        ),
        "url": engine.url.render_as_string(hide_password=True) if engine is not None else None,
        "engine": id(engine) if engine is not None else None,
        "asyncio": rec.driver in ASYNC_DRIVERS,
        "pooled": pooled is not None,
        "checked_out": bool(pooled and pooled.checked_out),
        "state": "raw DB-API connection",
        "opened_at": rec.site,
        "stack": rec.stack,
        "checked_out_at": None,
        "checkout_stack": [],
        "phase": rec.phase,
        "fd": fd,
        "socket": sock,
        "protected_by_forkguard": _forkguard_guards(conn, pooled),
        "django_alias": _django_alias(conn),
    }
    _describe_holder(entry, rec, pooled)
    return entry


def _describe_holder(entry: dict[str, Any], rec: ConnRecord, pooled: _Pooled | None) -> None:
    """``state`` (who holds the connection) and, if checked out, the line that took it."""
    if pooled is not None:
        entry["state"] = "idle in pool"
    if pooled is not None and pooled.checked_out:
        entry["state"] = "checked out (held by a Session or Connection)"
        site, stack = recorder.checkouts.get(pooled.record, (None, []))
        entry["checked_out_at"], entry["checkout_stack"] = site, stack
    if entry["django_alias"]:
        entry["state"] = f"held by Django (connections[{entry['django_alias']!r}])"
    if rec.driver == "sqlite3":
        entry["server"] = "(a database file)"


# ---- Django -----------------------------------------------------------------------------------


def _django_alias(conn: Any) -> str | None:
    if "django.db" not in sys.modules:
        return None
    from django.db import connections

    for alias in connections:
        wrapper = connections[alias]
        if getattr(wrapper, "connection", None) is conn:
            return str(alias)
    return None


def django_databases() -> list[dict[str, Any]]:
    """Each alias of ``settings.DATABASES``: its persistence settings and its server."""
    if "django.conf" not in sys.modules:
        return []
    from django.conf import settings

    if not settings.configured:
        return []
    result = []
    for alias, cfg in settings.DATABASES.items():
        engine = str(cfg.get("ENGINE", ""))
        family = "mysql" if "mysql" in engine else "postgresql" if "postgres" in engine else None
        host = cfg.get("HOST") or "localhost"
        port = cfg.get("PORT") or (_drivers.DEFAULT_PORTS[family] if family else None)
        result.append(
            {
                "alias": alias,
                "engine": engine,
                "conn_max_age": cfg.get("CONN_MAX_AGE", 0),
                "health_checks": bool(cfg.get("CONN_HEALTH_CHECKS", False)),
                "server_key": f"{family}://{host}:{port}" if family else None,
            }
        )
    return result
