"""An asyncio app (create_async_engine, asyncpg) that queries at import with asyncio.run():
the loop is closed, but the connection stays in the engine's pool."""

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine("postgresql+asyncpg://root@127.0.0.1:5432/test")


async def warm_up() -> int:
    async with engine.connect() as conn:  # FG-MARK: connect
        return int((await conn.execute(text("SELECT 1"))).scalar_one())


ANSWER = asyncio.run(warm_up())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app (uvicorn workers under gunicorn --preload fork after this import)."""
