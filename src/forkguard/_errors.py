"""The one exception forkguard raises at users, so they can catch it by name."""

from __future__ import annotations

import os
from typing import Any, TypeVar

E = TypeVar("E", bound="InheritedConnectionError")


class ForkguardError(Exception):
    """Base class for forkguard's own errors."""


class ConfigurationError(ForkguardError, ValueError):
    """A forkguard setting (argument or environment variable) has a value it cannot use."""


class InheritedConnectionError(ForkguardError):
    """A process tried to use a database connection that it inherited through ``fork()``.

    The connection's socket belongs to the parent process; forkguard has already made the
    child's copy of it harmless, so using it here can only fail. The message names the parent
    pid, the engine URL (password hidden) and the line of code that opened the connection.
    """

    def __init__(
        self,
        message: str,
        *,
        parent_pid: int | None = None,
        url: str | None = None,
        opened_at: str | None = None,
    ) -> None:
        super().__init__(message)
        self.parent_pid = parent_pid
        self.url = url
        self.opened_at = opened_at

    @classmethod
    def for_connection(cls: type[E], state: Any) -> E:
        """The error for a use of ``state``'s connection (a ``TrackedConnection``) here."""
        message = (
            f"forkguard: pid {os.getpid()} tried to use a database connection it inherited "
            f"through fork(): {state.describe()}. Its socket belongs to pid {state.owner_pid}; "
            "forkguard has cut this process off from it. Open connections after the fork "
            "(not at import time), or run `forkguard doctor` to find where."
        ) + state.stack_text()
        return cls(message, parent_pid=state.owner_pid, url=state.url, opened_at=state.opened_at)

    @classmethod
    def for_client(cls: type[E], state: Any) -> E:
        """The error for a use of an inherited client connection (AMQP; ``state`` is a
        ``TrackedSocket``) here: it cannot reconnect by itself mid-channel, so it fails."""
        message = (
            f"forkguard: pid {os.getpid()} tried to use a {state.library} connection it "
            f"inherited through fork(): {state.describe()}. Its socket belongs to pid "
            f"{state.owner_pid}; forkguard has cut this process off from it (a message sent on "
            "it would have been lost). Open the connection after the fork - in the worker, "
            "not at import time - or run `forkguard doctor` to find where."
        )
        return cls(message, parent_pid=state.owner_pid, opened_at=state.opened_at)
