"""Is there a pooler or proxy between the app and its database server, and what are its limits?

Through PgBouncer, ProxySQL or MaxScale the app's connections are the pooler's clients, not the
server's: checking them against the server's ``max_connections`` alone is then wrong both ways.
Recognising one is best-effort, from what a client connection can see:

* the server's own port (``SHOW port`` / ``@@port``, answered by the server behind) differs from
  the port the app connects to: something forwards the connection (a pooler, a proxy, a port
  mapping);
* PgBouncer, on such a connection or on its default port 6432, answers ``SHOW VERSION`` on its
  admin console (the virtual database ``pgbouncer``, open to the users in its ``admin_users`` or
  ``stats_users``); ``SHOW CONFIG`` and ``SHOW DATABASES`` there give its limits;
* ProxySQL answers ``SELECT @@version_comment`` itself ("(ProxySQL)"), MaxScale may add
  "maxscale" to the version it reports. Their limits sit behind their own admin interfaces and
  credentials, which the doctor does not have: it says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("forkguard.doctor")

PGBOUNCER_PORT = 6432
# PgBouncer's settings that bound the app's connections (SHOW CONFIG).
_PGBOUNCER_KEYS = (
    "max_client_conn",
    "default_pool_size",
    "reserve_pool_size",
    "max_db_connections",
    "max_user_connections",
    "pool_mode",
)


@dataclass
class Address:
    """Where the app connects: enough to open the PgBouncer admin console next to it."""

    host: str | None
    port: int | None
    user: str | None = None
    password: str | None = None
    database: str | None = None


def address_from_url(url: Any) -> Address:
    """From a SQLAlchemy URL."""
    return Address(url.host, url.port, url.username, url.password, url.database)


def address_from_call(reconnect: Any) -> Address | None:
    """From a recorded ``connect(...)`` call (a functools.partial) of a PostgreSQL driver: its
    DSN (key=value or URI) first, then its keyword arguments."""
    args, kwargs = getattr(reconnect, "args", ()), dict(getattr(reconnect, "keywords", {}) or {})
    params: dict[str, Any] = {}
    dsn = args[0] if args and isinstance(args[0], str) else kwargs.pop("dsn", None)
    if isinstance(dsn, str):
        params.update(_parse_dsn(dsn))
    params.update({k: v for k, v in kwargs.items() if v is not None})
    port = params.get("port")
    return Address(
        host=params.get("host"),
        port=int(port) if port else None,
        user=params.get("user"),
        password=params.get("password"),
        database=params.get("dbname") or params.get("database"),
    )


def _parse_dsn(dsn: str) -> dict[str, Any]:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return dict(conninfo_to_dict(dsn))
    except ImportError:
        pass
    try:
        from psycopg2.extensions import parse_dsn

        return dict(parse_dsn(dsn))
    except ImportError:
        return {}


def _pg_connect(address: Address, database: str) -> Any:
    """A plain libpq connection (psycopg 3 or psycopg2, whichever is installed): the admin
    console speaks only the simple protocol, which both use for a statement without
    parameters."""
    given = {"host": address.host, "port": address.port, "user": address.user}
    given.update(password=address.password, dbname=database, connect_timeout=5)
    kwargs: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    try:
        import psycopg

        return psycopg.connect(autocommit=True, **kwargs)
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(**kwargs)
        conn.autocommit = True
        return conn


def _rows(conn: Any, statement: str) -> list[dict[str, Any]]:
    cur = conn.cursor()
    cur.execute(statement)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, row)) for row in cur.fetchall()]
    cur.close()
    return rows


def _int_or_text(value: Any) -> Any:
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def _pgbouncer_limits(conn: Any, database: str | None) -> dict[str, Any]:
    version = str(next(iter(_rows(conn, "SHOW VERSION")[0].values())))
    if "pgbouncer" not in version.lower():
        return {}
    config = {r["key"]: r["value"] for r in _rows(conn, "SHOW CONFIG")}
    limits = {k: _int_or_text(config[k]) for k in _PGBOUNCER_KEYS if k in config}
    for row in _rows(conn, "SHOW DATABASES"):
        if row.get("name") == database:
            # Per database: pool_size / reserve_pool / pool_mode / max_connections override.
            limits["database"] = {
                "name": database,
                "pool_size": row.get("pool_size"),
                "reserve_pool": row.get("reserve_pool", row.get("reserve_pool_size")),
                "pool_mode": row.get("pool_mode") or None,
                "max_connections": row.get("max_connections"),
            }
    return {"product": "PgBouncer", "version": version.split()[-1], **limits}


def read_pgbouncer(address: Address) -> dict[str, Any]:
    """PgBouncer's limits from its admin console, ``{}`` when nothing there is PgBouncer, or
    ``{"error": ...}`` when the console refused us."""
    try:
        conn = _pg_connect(address, "pgbouncer")
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if 'database "pgbouncer" does not exist' in text:
            return {}
        return {"error": f"its admin console refused the app's user: {text}"}
    try:
        return _pgbouncer_limits(conn, address.database)
    except Exception as exc:
        return {"error": f"could not read its admin console: {type(exc).__name__}: {exc}"}
    finally:
        close_quietly(conn, "the admin console")


def close_quietly(conn: Any, what: str) -> None:
    """Close a connection the doctor opened only to ask something; the answer is already read,
    so a failure to close is logged at debug level and changes no finding."""
    try:
        conn.close()
    except Exception:
        log.debug("forkguard doctor: closing %s failed", what, exc_info=True)


def _named_mysql_proxy(info: dict[str, Any]) -> str | None:
    if "proxysql" in str(info.get("version_comment", "")).lower():
        return "ProxySQL"
    if "maxscale" in str(info.get("version", "")).lower():
        return "MaxScale"
    return None


def recognise(family: str, info: dict[str, Any], address: Address | None) -> dict[str, Any] | None:
    """What sits between the app and the server (None: nothing seen), from the server's
    ``info`` (its ``port``) and the ``address`` the app connects to."""
    port = address.port if address is not None else None
    forwarded = bool(port and info.get("port") and int(info["port"]) != port)
    if family == "mysql":
        name = _named_mysql_proxy(info)
        if name is None and not forwarded:
            return None
        return {
            "product": name,
            "port": port,
            "error": "a proxy's limits sit behind its own admin interface, out of the doctor's "
            "reach",
        }
    if address is None or not (forwarded or port == PGBOUNCER_PORT):
        return None
    found = read_pgbouncer(address)
    if not found and not forwarded:
        return None
    if not found:
        found = {"error": "no PgBouncer admin console there; its limits are unknown"}
    return {"product": found.pop("product", None), "port": port, **found}
