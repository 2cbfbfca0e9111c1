"""The rules for a fleet's connections against a database server (or the pooler in front of
it): hosts x workers x (pool_size + max_overflow), plus the master's, against the server's
usable ``max_connections``; with a PgBouncer whose limits were read, against those."""

from __future__ import annotations

from typing import Any

from ._budget import Budget, PoolerBudget, Server, budget
from ._rules import Context, Finding, Rule, sentence

# What the server answers once it is full, to every client of it, not just this app.
_REFUSED = {
    "mysql": "'Too many connections' (1040)",
    "postgresql": "'sorry, too many clients already' / 'remaining connection slots are reserved'",
}


def _unreachable(server: Server, ctx: Context) -> bool:
    return not server.limited and bool(server.info.get("error"))


def _unreachable_finding(server: Server, ctx: Context) -> Finding:
    return Finding(
        kind="server-unreachable",
        severity="info",
        title=f"could not check {server.key}'s limits",
        detail=str(server.info["error"]),
        fix="Run the doctor where the database is reachable to check pool sizes.",
    )


def _fleet(server: Server, ctx: Context) -> Budget:
    fleet = budget(server, ctx.hosts, ctx.workers)
    assert fleet is not None  # every rule below checks budget() first
    return fleet


# ---- through a pooler whose limits are known ---------------------------------------------------


def _pooled(server: Server, ctx: Context) -> PoolerBudget | None:
    pooler = server.pooler
    fleet = budget(server, ctx.hosts, ctx.workers)
    if fleet is None or not pooler or pooler.get("max_client_conn") is None:
        return None
    return PoolerBudget(fleet)


def _through_pooler(server: Server, ctx: Context) -> bool:
    return _pooled(server, ctx) is not None


def _pooler_fix(pooled: PoolerBudget) -> str:
    fixes = []
    if not pooled.clients_fit:
        fixes.append(f"raise max_client_conn to at least {pooled.clients}")
    if not pooled.server_fits:
        room = pooled.fleet.pooler_pool() if pooled.instances > 1 else pooled.fleet.server.usable
        fixes.append(
            f"lower default_pool_size + reserve_pool_size to {room} or less "
            f"(x {pooled.instances} poolers)"
        )
    if pooled.mode == "session":
        fixes.append("use pool_mode = transaction so that clients share server connections")
    return sentence("; ".join(fixes)) + "." if fixes else "Nothing to change."


def _pooler_finding(server: Server, ctx: Context) -> Finding:
    pooled = _pooled(server, ctx)
    assert pooled is not None  # _through_pooler
    name = f"{pooled.pooler.get('product')} {pooled.pooler.get('version', '')}".strip()
    where = "on each host" if pooled.instances > 1 else "shared by the hosts"
    fits = pooled.clients_fit and pooled.server_fits
    return Finding(
        kind="pool-capacity",
        severity="info" if fits else "error",
        title=(
            f"{server.key} is {name} ({where}, pool_mode={pooled.mode}): "
            f"{pooled.clients} clients per pooler of max_client_conn={pooled.max_clients}; "
            f"{pooled.instances} x {pooled.per_instance} = {pooled.server_connections} server "
            f"connections of {server.usable} usable"
        ),
        detail=(
            f"The app's pools ({server.sizes()} per worker; {pooled.fleet.formula()} in all) "
            "are the pooler's clients; the server sees only the pooler's connections."
            + (
                " In session mode each client holds a server connection while it is "
                "connected: the clients beyond the pool wait."
                if pooled.mode == "session"
                else ""
            )
        ),
        fix=_pooler_fix(pooled),
        location=server.queued[0].get("created_at"),
        data=pooled.data(),
    )


# ---- straight to the server (or through a pooler whose limits are unknown) ---------------------


def _workers_unknown(server: Server, ctx: Context) -> bool:
    return server.bounded and ctx.workers is None


def _capacity_unknown_finding(server: Server, ctx: Context) -> Finding:
    per_worker, hosts = server.per_worker, ctx.hosts
    fits = (server.usable - hosts * server.in_master) // per_worker if per_worker else 0
    spread = f" in all, {fits // hosts} per host on {hosts} hosts" if hosts > 1 else ""
    return Finding(
        kind="pool-capacity",
        severity="info",
        title=f"{server.key}: each worker can open up to {per_worker} connections; "
        f"{server.usable} usable connections fit at most {fits} workers{spread}",
        detail=f"{server.sizes()}. The worker count is unknown.",
        fix="Pass --workers N (or a server config with -c / --uwsgi) to check it.",
        location=server.queued[0].get("created_at"),
        data={"server": server.key, "usable": server.usable, "per_worker": per_worker},
    )


def _near_max_connections(server: Server, ctx: Context) -> bool:
    fleet = budget(server, ctx.hosts, ctx.workers)
    return fleet is not None and fleet.near


def _pooler_advice(fleet: Budget, advice: dict[str, Any]) -> str:
    pool, per_host = fleet.pooler_pool(), fleet.per_host
    share = f"{fleet.hosts} x {pool} = {fleet.hosts * pool}" if fleet.hosts > 1 else str(pool)
    if fleet.server.family == "postgresql":
        return (
            f"put PgBouncer (pool_mode = transaction) on each host: max_client_conn = "
            f"{per_host} (one host's clients), default_pool_size = {pool} ({share} server "
            f"connections of {fleet.server.usable} usable)"
        )
    return (
        f"put ProxySQL on each host: mysql-max_connections = {per_host} (one host's clients), "
        f"max_connections = {pool} for the server in mysql_servers ({share} server connections "
        f"of {fleet.server.usable}); or MaxScale with connection sharing (idle_session_pool_time)"
    )


def _capacity_fix(fleet: Budget, advice: dict[str, Any]) -> str:
    if advice["pool_size"] is not None:
        first = (
            f"Shrink the pools: create_engine(..., pool_size={advice['pool_size']}, "
            f"max_overflow={advice['max_overflow']}) for {fleet.workers} workers"
            + (f" on each of {fleet.hosts} hosts" if fleet.hosts > 1 else "")
        )
    else:
        first = f"Even pool_size=1 is too many for {fleet.hosts * fleet.workers} workers"
    return (
        f"{first}; or {_pooler_advice(fleet, advice)}; or raise max_connections to "
        f"{advice['max_connections']} on the server, or run fewer workers."
    )


def _reserved_words(server: Server) -> str:
    reserved = server.info.get("reserved") or {}
    if not reserved:
        return ""
    parts = ", ".join(f"{k}={v}" for k, v in reserved.items())
    return f" ({parts} kept from max_connections={server.info['max_connections']})"


def _capacity_finding(server: Server, ctx: Context) -> Finding:
    fleet = _fleet(server, ctx)
    advice = fleet.recommendation()
    unknown = " (through a pooler whose limits are unknown)" if server.pooler else ""
    return Finding(
        kind="pool-capacity",
        severity="warning" if fleet.fits else "error",
        title=(
            f"{server.key}: {fleet.formula()} {'close to' if fleet.fits else '>'} "
            f"{server.usable} usable connections{_reserved_words(server)}{unknown}"
        ),
        detail=(
            f"{server.sizes()} per worker. Under load the server refuses the rest: "
            f"{_REFUSED.get(server.family, 'too many connections')}, for every client of that "
            "server, not just this app."
        ),
        fix=_capacity_fix(fleet, advice),
        location=server.queued[0].get("created_at"),
        data={**fleet.data(), "recommendation": advice},
    )


# ---- what sits in front of the server ----------------------------------------------------------


def _pooler_unknown(server: Server, ctx: Context) -> bool:
    pooler = server.pooler
    return pooler is not None and pooler.get("max_client_conn") is None


def _pooler_unknown_finding(server: Server, ctx: Context) -> Finding:
    pooler = server.pooler or {}
    name = pooler.get("product") or "a pooler, proxy or port mapping"
    return Finding(
        kind="pooler",
        severity="info",
        title=f"{server.key} is not the server itself: {name} in front of "
        f"{server.info.get('product')} on port {server.info.get('port')}; "
        "its limits could not be read",
        detail=(
            f"{sentence(str(pooler.get('error')))}. The pools are checked against the server's "
            "max_connections as if each client connection were a server connection."
        ),
        fix="Check the pooler's client limit (PgBouncer max_client_conn, ProxySQL "
        "mysql-max_connections) against the numbers above; for PgBouncer, list the app's "
        "user in stats_users to let the doctor read them.",
        data={"server": server.key, **pooler},
    )


# Every note that applies, for each server some engine reaches.
SERVER_NOTES: tuple[Rule[Server], ...] = (Rule(_pooler_unknown, _pooler_unknown_finding),)

# The first rule that applies, for each server some engine reaches.
SERVER_RULES: tuple[Rule[Server], ...] = (
    Rule(_unreachable, _unreachable_finding),
    Rule(_through_pooler, _pooler_finding),
    Rule(_workers_unknown, _capacity_unknown_finding),
    Rule(_near_max_connections, _capacity_finding),
)
