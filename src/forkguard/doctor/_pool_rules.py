"""The rules for pools against their database server: capacity (:mod:`._capacity_rules`), a
pool without a limit, and idle timeouts (``pool_recycle``, Django's ``CONN_MAX_AGE``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._budget import Server
from ._capacity_rules import SERVER_NOTES, SERVER_RULES
from ._rules import Context, Finding, Rule, every_match, first_match


@dataclass
class _Idle:
    """A pool that keeps connections (an engine, a Django database) and its server's limits."""

    item: dict[str, Any]
    info: dict[str, Any]

    @property
    def wait(self) -> int:
        return int(self.info.get("wait_timeout") or 0)


def pool_findings(facts: dict[str, Any], ctx: Context) -> list[Finding]:
    """Per server (its engines first), then per engine, then per Django database."""
    servers: dict[str, dict[str, Any]] = facts.get("servers") or {}
    engines: dict[str, dict[str, Any]] = facts.get("engines") or {}
    findings: list[Finding] = []
    for server in servers_of(facts):
        pools = server.queued if server.limited else []
        findings += every_match(_POOL_RULES, pools, ctx)
        findings += every_match(SERVER_NOTES, [server], ctx)
        findings += first_match(SERVER_RULES, [server], ctx)
    by_url = sorted(engines.values(), key=lambda e: str(e.get("url")))
    findings += every_match(_ENGINE_RULES, _with_limits(by_url, servers, "server"), ctx)
    databases = facts.get("django_databases") or []
    findings += every_match(_DJANGO_RULES, _with_limits(databases, servers, "server_key"), ctx)
    return findings


def servers_of(facts: dict[str, Any]) -> list[Server]:
    """Each server some engine reaches, by key."""
    servers: dict[str, dict[str, Any]] = facts.get("servers") or {}
    connections = facts.get("connections") or []
    by_server: dict[str, list[dict[str, Any]]] = {}
    for engine in (facts.get("engines") or {}).values():
        if engine.get("server"):
            by_server.setdefault(engine["server"], []).append(engine)
    return [
        Server(
            key=key,
            info=servers.get(key) or {},
            engines=group,
            in_master=sum(1 for c in connections if c.get("server_key") == key),
        )
        for key, group in sorted(by_server.items())
    ]


def _overflow_unlimited(engine: dict[str, Any], ctx: Context) -> bool:
    return (engine.get("max_overflow") or 0) < 0


def _unlimited_finding(engine: dict[str, Any], ctx: Context) -> Finding:
    return Finding(
        kind="pool-capacity",
        severity="warning",
        title=f"{engine['url']}: max_overflow=-1, no limit on connections per worker",
        detail="Under load every worker can open any number of connections.",
        fix="Set a finite max_overflow (e.g. 10) in create_engine().",
        location=engine.get("created_at"),
        data={"server": engine["server"]},
    )


# Every rule that applies, for each queue pool on a server whose limits are known.
_POOL_RULES: tuple[Rule[dict[str, Any]], ...] = (Rule(_overflow_unlimited, _unlimited_finding),)


def _with_limits(
    items: list[dict[str, Any]], servers: dict[str, dict[str, Any]], key: str
) -> list[_Idle]:
    """Each item with the limits of the server its ``key`` names."""
    return [_Idle(item, servers.get(item.get(key) or "") or {}) for item in items]


# ---- idle timeouts ----------------------------------------------------------------------------


def _suggest_recycle(wait_timeout: int) -> int:
    return 3600 if wait_timeout > 3660 else max(1, int(wait_timeout * 0.9))


def _recycle(engine: dict[str, Any]) -> int:
    return int(engine.get("pool_recycle", -1))


def _outlives_wait_timeout(pool: _Idle, ctx: Context) -> bool:
    engine, wait = pool.item, pool.wait
    if wait <= 0 or engine.get("pool_pre_ping") or engine.get("pool_size") is None:
        return False
    return not 0 <= _recycle(engine) < wait


def _recycle_finding(pool: _Idle, ctx: Context) -> Finding:
    engine, wait, recycle = pool.item, pool.wait, _recycle(pool.item)
    setting = pool.info.get("wait_timeout_setting", "wait_timeout")
    suggest = _suggest_recycle(wait)
    return Finding(
        kind="pool-recycle",
        severity="warning",
        title=f"{engine['url']}: pooled connections outlive the server's {setting}={wait}s",
        detail=(
            f"pool_recycle={recycle if recycle >= 0 else 'unset'}, pool_pre_ping=False: "
            f"a connection left idle in a worker's pool for more than {wait}s has been "
            "closed by the server, and the next request that takes it fails "
            "('MySQL server has gone away' 2006, 'Lost connection' 2013, "
            "'terminating connection due to idle-session timeout')."
        ),
        fix=(
            f"create_engine(..., pool_recycle={suggest}, pool_pre_ping=True) "
            "(Flask-SQLAlchemy: SQLALCHEMY_ENGINE_OPTIONS = "
            f"{{'pool_recycle': {suggest}, 'pool_pre_ping': True}})."
        ),
        location=engine.get("created_at"),
        stack=engine.get("created_stack") or [],
        data={"server": engine.get("server"), "wait_timeout": wait, "recycle": recycle},
    )


# Every rule that applies, for each engine (by URL).
_ENGINE_RULES: tuple[Rule[_Idle], ...] = (Rule(_outlives_wait_timeout, _recycle_finding),)


def _conn_max_age_outlives(database: _Idle, ctx: Context) -> bool:
    db, wait = database.item, database.wait
    age = db.get("conn_max_age")
    if wait <= 0 or db.get("health_checks") or age == 0:
        return False
    return not (age is not None and int(age) < wait)


def _conn_max_age_finding(database: _Idle, ctx: Context) -> Finding:
    db, wait = database.item, database.wait
    return Finding(
        kind="django-conn-max-age",
        severity="warning",
        title=(
            f"Django database {db['alias']!r}: CONN_MAX_AGE={db.get('conn_max_age')} outlives "
            f"the server's wait_timeout={wait}s"
        ),
        detail="A persistent connection idle longer than that is closed by the server.",
        fix=(
            f"Set CONN_MAX_AGE below {wait} or CONN_HEALTH_CHECKS = True in "
            f"DATABASES[{db['alias']!r}]."
        ),
        data={"alias": db["alias"], "wait_timeout": wait},
    )


# Every rule that applies, for each of Django's DATABASES.
_DJANGO_RULES: tuple[Rule[_Idle], ...] = (Rule(_conn_max_age_outlives, _conn_max_age_finding),)
