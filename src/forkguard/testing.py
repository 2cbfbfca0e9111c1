"""Hooks for measuring forkguard itself; not something an application calls.

Benchmarks time the fork check that forkguard's hot path falls back to, and report whether
this machine gives forkguard its cheap fork marker. These names let a tool
outside the package measure that real code path without reaching into private modules; they
are pinned by the public API test like any other public name.
"""

from __future__ import annotations

from . import _fork

__all__ = ["fork_check", "has_fork_marker"]

fork_check = _fork.check
"""The fork check itself (the same function, so that timing it adds no call): one byte read of
the fork marker page, or one ``getpid()`` without ``MADV_WIPEONFORK``. True if this call
handled a fork that no hook reported; calling it in a process that did not fork does nothing."""


def has_fork_marker() -> bool:
    """True if the fork check reads a ``MADV_WIPEONFORK`` page (Linux >= 4.14), False if it
    falls back to ``getpid()``."""
    return _fork._marker is not None
