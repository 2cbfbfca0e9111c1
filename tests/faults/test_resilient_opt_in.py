"""Issue 7, item 3: pre-ping is the user's choice. ``install()`` leaves pools as they are;
``install(resilient=True)`` (or ``FORKGUARD_RESILIENT=1``) turns pre-ping on for every guarded
engine, made before or after the call, and the fresh pool a child gets keeps it."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import forkguard
from forkguard_lab.harness.servers import DBServer

from ..forking import run_in_child

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def url(mariadb: DBServer) -> str:
    return mariadb.url("pymysql", "mysql")


def test_install_does_not_turn_on_pre_ping(url: str) -> None:
    forkguard.install()
    engine = sa.create_engine(url)
    try:
        assert engine.pool._pre_ping is False
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_resilient_turns_on_pre_ping_in_parent_and_child(
    url: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sa.create_engine(url)
    try:
        if how == "argument":
            forkguard.install(resilient=True)
        else:
            monkeypatch.setenv("FORKGUARD_RESILIENT", "1")
            forkguard.install()
        after = sa.create_engine(url)
        for engine in (before, after):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            assert engine.pool._pre_ping is True

        def child() -> Any:
            with after.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return [before.pool._pre_ping, after.pool._pre_ping, forkguard.stats()]

        out = run_in_child(child)
        assert out["ok"], out
        assert out["value"][:2] == [True, True]
        assert out["value"][2]["pools_replaced"] >= 1
        after.dispose()
    finally:
        before.dispose()
