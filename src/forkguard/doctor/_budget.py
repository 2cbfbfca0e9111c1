"""The connection budget of one database server: what a fleet of hosts x workers x pools asks
of it, what it (or a pooler in front of it) allows, and the settings that would fit.

What is counted, per host: each worker's ``pool_size + max_overflow`` for every QueuePool on
that server, plus the connections the master itself still holds after import (each host's
master holds its own). A pool with no limit (``max_overflow=-1``) has no budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Above this share of the usable connections the budget is a warning: the server also has
# other clients (migrations, consoles, monitoring, replicas) and the doctor cannot see them.
HEADROOM = 0.8
_LOOPBACK = ("localhost", "::1", "[::1]")


@dataclass
class Server:
    """One database server: its limits (or why they are unknown), the engines that reach it,
    and how many connections the master itself holds to it."""

    key: str
    info: dict[str, Any]
    engines: list[dict[str, Any]]
    in_master: int

    @property
    def family(self) -> str:
        return self.key.split(":", 1)[0]

    @property
    def limited(self) -> bool:
        return "max_connections" in self.info

    @property
    def queued(self) -> list[dict[str, Any]]:
        """The engines whose pool has a size (a QueuePool)."""
        return [e for e in self.engines if e.get("pool_size") is not None]

    @property
    def overflows(self) -> bool:
        """Some pool on it has no limit (max_overflow=-1)."""
        return any((e.get("max_overflow") or 0) < 0 for e in self.queued)

    @property
    def bounded(self) -> bool:
        """The limits are known and every queue pool on it has a finite size."""
        return self.limited and bool(self.queued) and not self.overflows

    @property
    def per_worker(self) -> int:
        return sum(int(e["pool_size"]) + max(0, int(e["max_overflow"])) for e in self.queued)

    @property
    def usable(self) -> int:
        """max_connections minus what the server reserves for administrators."""
        info = self.info
        if "usable_connections" in info:
            return int(info["usable_connections"])
        return int(info["max_connections"]) - int(info.get("reserved_connections", 0))

    @property
    def pooler(self) -> dict[str, Any] | None:
        pooler: dict[str, Any] | None = self.info.get("pooler")
        return pooler

    @property
    def local(self) -> bool:
        """The app connects over loopback or a Unix socket: to a pooler on each host."""
        address = self.key.split("://", 1)[-1]
        host = address if address.startswith("/") else address.rpartition(":")[0]
        return host.startswith(("/", "127.")) or host in _LOOPBACK

    def sizes(self) -> str:
        return ", ".join(
            f"pool_size={e['pool_size']} + max_overflow={e['max_overflow']}" for e in self.queued
        )


@dataclass
class Budget:
    """``hosts`` x ``workers`` against one bounded server."""

    server: Server
    hosts: int
    workers: int

    @property
    def per_host(self) -> int:
        return self.workers * self.server.per_worker + self.server.in_master

    @property
    def total(self) -> int:
        return self.hosts * self.per_host

    @property
    def fits(self) -> bool:
        return self.total <= self.server.usable

    @property
    def near(self) -> bool:
        return self.total > self.server.usable * HEADROOM

    def formula(self) -> str:
        """``3 hosts x (4 workers x 15 + 1 in the master) = 183``"""
        inner = f"{self.workers} workers x {self.server.per_worker}"
        if self.server.in_master:
            inner = f"({inner} + {self.server.in_master} in the master)"
        fleet = f"{self.hosts} hosts x " if self.hosts > 1 else ""
        return f"{fleet}{inner} = {self.total}"

    def pool_that_fits(self) -> tuple[int, int] | None:
        """(pool_size, max_overflow) per worker that fits within the headroom, if any."""
        room = int(self.server.usable * HEADROOM) - self.hosts * self.server.in_master
        per_worker = room // (self.hosts * self.workers)
        if per_worker < 1:
            return None
        size = max(1, per_worker * 2 // 3)
        return size, per_worker - size

    def pooler_pool(self) -> int:
        """The server connections each host's pooler may open: the headroom shared by hosts
        (no more than that host's clients, who could not use more)."""
        return max(1, min(self.per_host, int(self.server.usable * HEADROOM) // self.hosts))

    def recommendation(self) -> dict[str, Any]:
        fits = self.pool_that_fits()
        pool = self.pooler_pool()
        reserved = int(self.server.info["max_connections"]) - self.server.usable
        advice: dict[str, Any] = {
            "pool_size": fits[0] if fits else None,
            "max_overflow": fits[1] if fits else None,
            # the server's max_connections that would hold this fleet within the headroom
            "max_connections": reserved + math.ceil(self.total / HEADROOM),
        }
        if self.server.family == "postgresql":
            advice["pooler"] = {
                "product": "PgBouncer",
                "pool_mode": "transaction",
                "max_client_conn": self.per_host,
                "default_pool_size": pool,
                "per": "host",
            }
        else:
            advice["pooler"] = {
                "product": "ProxySQL",
                "mysql-max_connections": self.per_host,
                "mysql_servers.max_connections": pool,
                "per": "host",
            }
        return advice

    def data(self) -> dict[str, Any]:
        server = self.server
        return {
            "server": server.key,
            "hosts": self.hosts,
            "workers": self.workers,
            "per_worker": server.per_worker,
            "master_connections": server.in_master,
            "per_host": self.per_host,
            "total": self.total,
            "max_connections": server.info["max_connections"],
            "reserved_connections": server.info.get("reserved_connections", 0),
            "usable": server.usable,
            "fits": self.fits,
        }


def budget(server: Server, hosts: int, workers: int | None) -> Budget | None:
    """The fleet's budget on ``server`` when it can be counted."""
    if workers is None or not server.bounded:
        return None
    return Budget(server, hosts, workers)


def _positive(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass
class PoolerBudget:
    """The fleet against a PgBouncer whose limits were read: its clients against its
    ``max_client_conn``, its server connections against the server's usable ones. A pooler
    reached over loopback or a Unix socket is taken to run on each host; another, to be one
    shared by all the hosts."""

    fleet: Budget

    @property
    def pooler(self) -> dict[str, Any]:
        return self.fleet.server.pooler or {}

    @property
    def instances(self) -> int:
        return self.fleet.hosts if self.fleet.server.local else 1

    @property
    def clients(self) -> int:
        """The client connections each pooler gets."""
        return self.fleet.per_host if self.fleet.server.local else self.fleet.total

    @property
    def max_clients(self) -> int | None:
        return _positive(self.pooler.get("max_client_conn"))

    @property
    def mode(self) -> str:
        database = self.pooler.get("database") or {}
        return str(database.get("pool_mode") or self.pooler.get("pool_mode") or "session")

    @property
    def per_instance(self) -> int:
        """Server connections one pooler opens for the app's database: its pool plus its
        reserve pool, capped by max_db_connections and the database's max_connections."""
        pooler, database = self.pooler, self.pooler.get("database") or {}
        size = database.get("pool_size")
        reserve = database.get("reserve_pool")
        pool = int(size if size is not None else pooler.get("default_pool_size") or 0)
        pool += int(reserve if reserve is not None else pooler.get("reserve_pool_size") or 0)
        caps = [pooler.get("max_db_connections"), database.get("max_connections")]
        return min([pool] + [c for c in map(_positive, caps) if c is not None])

    @property
    def server_connections(self) -> int:
        return self.instances * self.per_instance

    @property
    def clients_fit(self) -> bool:
        return self.max_clients is None or self.clients <= self.max_clients

    @property
    def server_fits(self) -> bool:
        return self.server_connections <= self.fleet.server.usable

    def data(self) -> dict[str, Any]:
        return {
            **self.fleet.data(),
            "pooler": self.pooler.get("product"),
            "pooler_instances": self.instances,
            "pooler_clients": self.clients,
            "max_client_conn": self.max_clients,
            "pool_mode": self.mode,
            "pooler_server_connections": self.server_connections,
            "fits": self.clients_fit and self.server_fits,
        }
