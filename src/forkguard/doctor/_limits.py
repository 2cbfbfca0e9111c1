"""Asking each database server for its limits (``max_connections``, the idle timeout), over a
connection of its own that is not counted among the app's."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ._connections import server_key_from_url
from ._recorders import ConnRecord

log = logging.getLogger("forkguard.doctor")


def _query_mysql(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()
    cur.execute("SELECT VERSION(), @@GLOBAL.max_connections, @@SESSION.wait_timeout")
    version, max_connections, wait_timeout = cur.fetchone()
    cur.close()
    return {
        "product": "MariaDB" if "mariadb" in str(version).lower() else "MySQL",
        "version": str(version),
        "max_connections": int(max_connections),
        "wait_timeout": int(wait_timeout),
    }


def _query_postgresql(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()
    cur.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN "
        "('max_connections', 'superuser_reserved_connections', 'idle_session_timeout', "
        "'server_version')"
    )
    rows = {str(name): str(value) for name, value in cur.fetchall()}
    cur.close()
    idle_ms = int(rows.get("idle_session_timeout", "0") or "0")
    return {
        "product": "PostgreSQL",
        "version": rows.get("server_version"),
        "max_connections": int(rows["max_connections"]),
        "reserved_connections": int(rows.get("superuser_reserved_connections", "0")),
        # seconds, like MySQL's wait_timeout; 0 = never
        "wait_timeout": idle_ms // 1000 if idle_ms else 0,
        "wait_timeout_setting": "idle_session_timeout",
    }


def _ask_server(family: str, opener: Callable[[], Any]) -> dict[str, Any]:
    try:
        conn = opener()
    except Exception as exc:
        return {"error": f"could not connect to ask for its limits: {type(exc).__name__}: {exc}"}
    try:
        return _query_mysql(conn) if family == "mysql" else _query_postgresql(conn)
    except Exception as exc:
        return {"error": f"could not read its limits: {type(exc).__name__}: {exc}"}
    finally:
        try:
            conn.close()
        except Exception:
            log.debug("forkguard doctor: closing the limits connection failed", exc_info=True)


def _ask_engine(family: str, engine: Any) -> dict[str, Any]:
    def open_engine() -> Any:
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        return engine.dialect.connect(*cargs, **cparams)

    if not getattr(engine.dialect, "is_async", False):
        return _ask_server(family, open_engine)
    # An asyncio dialect connects (and its cursors run) in a greenlet under a running loop.
    import asyncio

    from sqlalchemy.util import greenlet_spawn

    try:
        result: dict[str, Any] = asyncio.run(greenlet_spawn(_ask_server, family, open_engine))
    except Exception as exc:
        return {"error": f"could not ask for its limits: {type(exc).__name__}: {exc}"}
    return result


def collect_servers(
    engines: list[Any], connections: list[tuple[dict[str, Any], ConnRecord]]
) -> dict[str, dict[str, Any]]:
    """server key -> its limits (or why they are unknown): through each engine first, then by
    reconnecting with a raw connection's own arguments."""
    servers: dict[str, dict[str, Any]] = {}
    for engine in engines:
        key = server_key_from_url(engine.url)
        if key is None or key in servers:
            continue
        servers[key] = _ask_engine(key.split(":", 1)[0], engine)
    for entry, rec in connections:
        key = entry.get("server_key")
        if key is None or key in servers or rec.reconnect is None:
            continue
        servers[key] = _ask_server(key.split(":", 1)[0], rec.reconnect)
    return servers
