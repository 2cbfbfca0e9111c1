"""Which code a published run came from.

Every generated page (docs/lab.md, docs/reliability.md, the benchmark pages) prints the commit
it ran on, so a reader can tell a figure from the current code from one left over from older
code; ``-dirty`` says the run had uncommitted changes.
"""

from __future__ import annotations

import os
import subprocess
from typing import Optional

__all__ = ["checkout_commit"]


def checkout_commit(where: Optional[str] = None) -> str:
    """``git rev-parse --short HEAD`` of the checkout holding this code, ``-dirty`` if it has
    uncommitted changes; ``unknown`` outside a git checkout (an installed wheel)."""
    cwd = where or os.path.dirname(os.path.abspath(__file__))
    head = _git(cwd, "rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    changes = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if changes else head


def _git(cwd: str, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
