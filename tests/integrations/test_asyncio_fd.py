"""The fd finders for SQLAlchemy's asyncio drivers find the connection's real socket."""

from __future__ import annotations

import asyncio
import os
import socket
import stat

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from forkguard import _registry

URLS = {
    "asyncpg": ("postgresql+asyncpg://root@127.0.0.1:5432/test", 5432),
    "aiomysql": ("mysql+aiomysql://root@127.0.0.1:3306/test", 3306),
}


@pytest.mark.parametrize("driver", sorted(URLS))
def test_tracking_an_adapted_connection_records_its_socket(driver: str) -> None:
    pytest.importorskip(driver)
    url, port = URLS[driver]

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                raw = await conn.get_raw_connection()
                state = _registry.track(raw.dbapi_connection)
                assert state.driver == driver
                assert len(state.fds) == 1
                fd = state.fds[0].fd
                assert stat.S_ISSOCK(os.fstat(fd).st_mode)
                peer = socket.socket(fileno=os.dup(fd))
                try:
                    assert peer.getpeername()[1] == port
                finally:
                    peer.close()
                assert state.fds[0].is_current()
                _registry.forget(raw.dbapi_connection)
        finally:
            await engine.dispose()

    asyncio.run(main())
