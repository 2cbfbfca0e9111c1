"""Where in the user's code: the line (and stack) that opened, took or started something.

Every recorder of the probe names the user's ``file:line``, never forkguard's own frames nor a
library's; an asyncio engine's pool checkout is followed out of SQLAlchemy's greenlet.
"""

from __future__ import annotations

import os
import sys
import traceback
import types
from typing import Iterator

from .. import _origin

FORKGUARD_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep


def is_user(frame: types.FrameType) -> bool:
    if os.path.realpath(frame.f_code.co_filename).startswith(FORKGUARD_DIR):
        return False
    return _origin.is_user_frame(frame)


def frames(frame: types.FrameType | None) -> Iterator[types.FrameType]:
    """``frame`` and its callers, then on into the parent greenlets: SQLAlchemy's asyncio
    engines run their sync code (pool checkouts) in a child greenlet whose stack ends there."""
    glet = None
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None:
        glet = greenlet.getcurrent()
    while True:
        while frame is not None:
            yield frame
            frame = frame.f_back
        glet = getattr(glet, "parent", None)
        if glet is None:
            return
        frame = glet.gr_frame


def site_and_stack(skip: int = 2) -> tuple[str | None, list[str]]:
    """The innermost user line and the formatted stack, ``skip`` frames above this call."""
    stack_frames = list(frames(sys._getframe(skip)))
    site = next((f"{f.f_code.co_filename}:{f.f_lineno}" for f in stack_frames if is_user(f)), None)
    summary = traceback.StackSummary.extract((f, f.f_lineno) for f in reversed(stack_frames))
    stack = traceback.format_list(summary)
    # Drop the probe's own frames at the top of the stack: they are noise in a user's report.
    while stack and (FORKGUARD_DIR in stack[0] or "<frozen runpy>" in stack[0]):
        stack.pop(0)
    return site, stack


def tb_site(tb: types.TracebackType | None) -> str | None:
    """The innermost user frame of a traceback."""
    site = None
    while tb is not None:
        if is_user(tb.tb_frame):
            site = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return site
