"""async_mysql's twin: the same import-time query, then ``await engine.dispose()`` in the same
asyncio.run(), so the pool is empty when the server forks."""

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine("mysql+aiomysql://root@127.0.0.1:3306/test", pool_pre_ping=True)


async def warm_up() -> int:
    async with engine.connect() as conn:
        answer = int((await conn.execute(text("SELECT 1"))).scalar_one())
    await engine.dispose()
    return answer


ANSWER = asyncio.run(warm_up())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app."""
