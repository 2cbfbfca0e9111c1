"""Where in the user's code a connection was opened.

A connection opened at import time is the bug forkguard exists for, so every report (strict
mode, warn mode, ``forkguard doctor``) names the user's line, not SQLAlchemy's or a driver's.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from functools import lru_cache
from types import FrameType

# Frames from these packages are plumbing between the user's line and the socket.
_LIBRARY_MODULES = (
    "sqlalchemy",
    "flask_sqlalchemy",
    "forkguard",
    "importlib",
    "pymysql",
    "MySQLdb",
    "psycopg",
    "psycopg2",
    "mysql",
    "asyncpg",
    "aiomysql",
    "greenlet",
    "django",
    "celery",
    "billiard",
    "contextlib",
    "threading",
    "runpy",
    "urllib3",
    "requests",
    "httpx",
    "httpcore",
    "anyio",
    "sniffio",
    "pika",
    "amqp",
    "kombu",
)


def _library_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.realpath(path) + os.sep)
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()


def is_user_frame(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    if not isinstance(module, str):
        module = ""
    if module.split(".", 1)[0] in _LIBRARY_MODULES:
        return False
    return _is_user_file(frame.f_code.co_filename)


@lru_cache(maxsize=1024)
def _is_user_file(filename: str) -> bool:
    if filename.startswith(("<frozen", "<string>")):
        return False
    return not os.path.realpath(filename).startswith(_LIBRARY_DIRS)


def opening_site(skip: int = 1) -> str | None:
    """``file:line`` of the innermost user frame on the current stack (cheap: no source read)."""
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None:
        if is_user_frame(frame):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def opening_stack(skip: int = 1) -> list[str]:
    """The full stack, formatted, for ``FORKGUARD_TRACE=1`` and ``doctor --verbose``."""
    return traceback.format_stack(sys._getframe(skip))
