"""redis-py checks its pid itself (``ConnectionPool._checkpid``: a child drops the pool it
inherited and connects anew, without closing the parent's sockets). forkguard does not touch
Redis clients; this proves the two work together: with forkguard installed, children forked
from a process whose client holds a pooled connection each get their own connection, every
command reaches the server exactly once, and the parent's connection goes on working.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import forkguard
from tests.forking import start_child

redis = pytest.importorskip("redis")

CHILDREN = 4
INCREMENTS = 50


@pytest.fixture
def client() -> Iterator[Any]:
    r = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=10)
    try:
        r.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    yield r
    r.close()


def _incr_calls(r: Any) -> int:
    # redis-py sends incr() as INCRBY.
    stats = r.info("commandstats").get("cmdstat_incrby", {})
    return int(stats.get("calls", 0))


@pytest.mark.parametrize("installed", [True, False], ids=["forkguard", "redis-py-alone"])
def test_children_and_parent_each_use_their_own_connection(client: Any, installed: bool) -> None:
    if installed:
        forkguard.install()
    key = f"fg_redis_{uuid.uuid4().hex}"
    parent_id = client.client_id()
    calls_before = _incr_calls(client)

    def child() -> dict[str, Any]:
        for _ in range(INCREMENTS):
            client.incr(key)
        return {"client_id": client.client_id(), "stats": forkguard.stats()}

    try:
        waits = [start_child(child, "os", timeout=60) for _ in range(CHILDREN)]
        results = [wait() for wait in waits]
        assert all(r["ok"] for r in results), results
        child_ids = {r["value"]["client_id"] for r in results}
        assert len(child_ids) == CHILDREN and parent_id not in child_ids
        # Every INCR reached the server exactly once: none lost, none sent twice.
        assert int(client.get(key)) == CHILDREN * INCREMENTS
        assert _incr_calls(client) - calls_before == CHILDREN * INCREMENTS
        assert client.client_id() == parent_id  # the parent's connection is intact
        if installed:
            # forkguard leaves Redis to redis-py: it silences nothing of it.
            assert all(r["value"]["stats"]["connections_neutralized"] == 0 for r in results)
    finally:
        client.delete(key)
