"""Asking each database server for its limits (``max_connections`` and the connections it
reserves, the idle timeout), over a connection of its own that is not counted among the app's;
and whether a pooler sits in front of it (:mod:`._poolers`)."""

from __future__ import annotations

from typing import Any, Callable

from ._connections import server_key_from_url
from ._poolers import Address, address_from_call, address_from_url, close_quietly, recognise
from ._recorders import ConnRecord

# The server's variables the budget needs: MySQL / MariaDB accept max_connections + 1 clients,
# the extra one kept for an account with SUPER / CONNECTION_ADMIN ("mysqld actually permits
# max_connections + 1 client connections", MySQL Reference Manual, B.3.2.5 Too many
# connections; MariaDB's CONNECTION ADMIN privilege "ignores max_connections"), and MariaDB's
# extra_max_connections are only for its extra_port (an admin port, thread pool). Neither is
# for the app: its budget is max_connections. The port is the server's own (a proxy in front
# forwards the statement).
_MYSQL_VARIABLES = "('extra_max_connections', 'port')"


def _query_mysql(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()
    cur.execute("SELECT VERSION(), @@GLOBAL.max_connections, @@SESSION.wait_timeout")
    version, max_connections, wait_timeout = cur.fetchone()
    cur.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN {_MYSQL_VARIABLES}")
    variables = {str(name): str(value) for name, value in cur.fetchall()}
    # Exactly the statement the mysql client sends at start: ProxySQL answers it itself.
    cur.execute("SELECT @@version_comment LIMIT 1")
    (comment,) = cur.fetchone()
    cur.close()
    info: dict[str, Any] = {
        "product": "MariaDB" if "mariadb" in str(version).lower() else "MySQL",
        "version": str(version),
        "version_comment": str(comment),
        "max_connections": int(max_connections),
        "reserved_connections": 0,
        "usable_connections": int(max_connections),
        "wait_timeout": int(wait_timeout),
    }
    if "extra_max_connections" in variables:
        info["extra_max_connections"] = int(variables["extra_max_connections"])
    if variables.get("port", "").isdigit():
        info["port"] = int(variables["port"])
    return info


# PostgreSQL keeps superuser_reserved_connections slots for superusers and, from version 16,
# reserved_connections more for roles granted pg_use_reserved_connections: the app has
# max_connections minus both (before 16 pg_settings has no reserved_connections row).
_PG_SETTINGS = (
    "('max_connections', 'superuser_reserved_connections', 'reserved_connections', "
    "'idle_session_timeout', 'server_version', 'server_version_num', 'port')"
)


def _query_postgresql(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()
    cur.execute(f"SELECT name, setting FROM pg_settings WHERE name IN {_PG_SETTINGS}")
    rows = {str(name): str(value) for name, value in cur.fetchall()}
    cur.close()
    idle_ms = int(rows.get("idle_session_timeout", "0") or "0")
    reserved = {
        name: int(rows[name])
        for name in ("superuser_reserved_connections", "reserved_connections")
        if rows.get(name, "").isdigit()
    }
    max_connections = int(rows["max_connections"])
    return {
        "product": "PostgreSQL",
        "version": rows.get("server_version"),
        "version_num": int(rows.get("server_version_num") or 0),
        "max_connections": max_connections,
        "reserved": reserved,
        "reserved_connections": sum(reserved.values()),
        "usable_connections": max_connections - sum(reserved.values()),
        "port": int(rows["port"]) if rows.get("port", "").isdigit() else None,
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
        close_quietly(conn, "the limits connection")


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


def _key_port(key: str) -> int | None:
    """The port in a server key (``postgresql://host:port``); None for a Unix socket."""
    port = key.rsplit(":", 1)[-1]
    return int(port) if port.isdigit() else None


def _with_pooler(key: str, info: dict[str, Any], address: Address | None) -> dict[str, Any]:
    """The server's limits, and what sits in front of it if the doctor recognises something."""
    if "max_connections" not in info:
        return info
    if address is not None:
        address.port = _key_port(key)
    pooler = recognise(key.split(":", 1)[0], info, address)
    return {**info, "pooler": pooler} if pooler else info


def collect_servers(
    engines: list[Any], connections: list[tuple[dict[str, Any], ConnRecord]]
) -> dict[str, dict[str, Any]]:
    """server key -> its limits (or why they are unknown) and any pooler in front of it:
    through each engine first, then by reconnecting with a raw connection's own arguments."""
    servers: dict[str, dict[str, Any]] = {}
    for engine in engines:
        key = server_key_from_url(engine.url)
        if key is None or key in servers:
            continue
        info = _ask_engine(key.split(":", 1)[0], engine)
        servers[key] = _with_pooler(key, info, address_from_url(engine.url))
    for entry, rec in connections:
        key = entry.get("server_key")
        if key is None or key in servers or rec.reconnect is None:
            continue
        info = _ask_server(key.split(":", 1)[0], rec.reconnect)
        servers[key] = _with_pooler(key, info, address_from_call(rec.reconnect))
    return servers
