"""A plain ASGI app on SQLAlchemy's asyncio engine, preloaded by gunicorn with uvicorn workers.

At import (in the gunicorn master, ``--preload``) it runs ``asyncio.run(warmup())``: the
engine's pool keeps a connection whose socket every worker inherits and whose protocol is bound
to an event loop that is already closed. That is the hazard: without forkguard the workers get
"attached to a different loop" / "Event loop is closed" errors or each other's replies.

Environment: FG_DB_URL (postgresql+asyncpg:// or mysql+aiomysql://), FG_GUARD (1:
``forkguard.asyncio.install()``, core: ``forkguard.install()``, 0: nothing).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Callable
from urllib.parse import parse_qs

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import forkguard
import forkguard.asyncio

if os.environ.get("FG_GUARD") == "1":
    forkguard.asyncio.install()  # forkguard.install() + quiet aiomysql finalizers
elif os.environ.get("FG_GUARD") == "core":
    forkguard.install()

engine = create_async_engine(os.environ["FG_DB_URL"], pool_size=5, max_overflow=5)
SESSION_SQL = text(
    "SELECT pg_backend_pid()"
    if engine.url.get_backend_name() == "postgresql"
    else "SELECT CONNECTION_ID()"
)


async def warmup() -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(SESSION_SQL)).scalar()


MASTER_SESSION = asyncio.run(warmup())
MASTER_PID = os.getpid()


async def _reply(send: Callable[..., Any], status: int, body: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body, default=str).encode()})


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    token = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
    try:
        async with engine.connect() as conn:
            session = (await conn.execute(SESSION_SQL)).scalar()
            echoed = (await conn.execute(text("SELECT :t"), {"t": token})).scalar()
    except Exception as exc:
        await _reply(send, 500, {"error": f"{type(exc).__name__}: {exc}"})
        return
    await _reply(
        send,
        200,
        {
            "pid": os.getpid(),
            "session": session,
            "master_session": MASTER_SESSION,
            "master_pid": MASTER_PID,
            "token": token,
            "echoed": echoed,
            "row": token,
            "stats": forkguard.stats(),
        },
    )
