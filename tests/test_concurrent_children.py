"""Many children at once on an engine whose pool held a connection at fork: no crossed answers."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

import forkguard

from .conftest import SOCKET_DRIVERS, URLS
from .forking import start_child

CHILDREN = 32
QUERIES = 200


def _echo_worker(engine: sa.engine.Engine, queries: int) -> Any:
    def work() -> dict[str, int]:
        mismatches = errors = 0
        for i in range(queries):
            token = f"{os.getpid()}-{i}-{uuid.uuid4().hex}"
            try:
                with engine.connect() as conn:
                    echoed = conn.execute(sa.text("SELECT :t"), {"t": token}).scalar()
                if echoed != token:
                    mismatches += 1
            except Exception:
                errors += 1
        return {"mismatches": mismatches, "errors": errors}

    return work


def _run(engine: sa.engine.Engine, children: int, queries: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:  # the parent's pooled connection, inherited by every child
        conn.execute(sa.text("SELECT 1"))
    waits = [start_child(_echo_worker(engine, queries), "os", timeout=60) for _ in range(children)]
    return [wait() for wait in waits]


@pytest.mark.parametrize("driver", SOCKET_DRIVERS)
def test_32_children_200_echoes_each_no_mismatch_no_error(make_engine, driver):
    forkguard.install()
    engine = make_engine(URLS[driver])
    results = _run(engine, CHILDREN, QUERIES)
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:2]
    assert sum(r["value"]["mismatches"] for r in results) == 0
    assert sum(r["value"]["errors"] for r in results) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_without_forkguard_children_cross_answers_or_fail(make_engine):
    engine = make_engine(URLS["pymysql"], connect_args={"read_timeout": 5, "write_timeout": 5})
    results = _run(engine, 8, 50)
    broken = sum(
        (r["value"]["mismatches"] + r["value"]["errors"]) if r["ok"] else 1 for r in results
    )
    assert broken > 0
