"""Which network client library opened a socket, and what that means after a fork.

The audit hook (:mod:`._recorders`) sees every ``socket.connect`` with its stack; the outermost
frame of a known client library names the client the user built (``requests`` rather than the
urllib3 under it, kombu rather than py-amqp), and this table says what its workers will see,
what forkguard does about it, and the fix.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

from ._sites import frames


@dataclass(frozen=True)
class Client:
    name: str
    # True: forkguard.install() covers it; None: the library copes by itself.
    covered: bool | None
    failure: str
    fix: str


_HTTP = (
    "Every worker inherits the pooled keep-alive connection: over TLS the server drops it "
    "(DECRYPTION_FAILED_OR_BAD_RECORD_MAC) and workers get SSL errors; over plain HTTP one "
    "worker reads the response meant for another."
)
_HTTP_FIX = (
    "forkguard.install() covers it: each worker's first request opens its own connection and "
    "the master's is left alone. Without forkguard: build the client per worker (post-fork "
    "hook) or lazily, or close its pool before the fork."
)
_AMQP = (
    "Every worker inherits the same AMQP connection: frames interleave on one channel "
    "numbering and the broker closes it for all, and a worker that closes its copy closes "
    "the master's."
)
_AMQP_FIX = (
    "Open the connection in each worker (post-fork hook, or on first use). With "
    "forkguard.install() a worker's use of the inherited one raises InheritedConnectionError "
    "(never a lost message) and nothing it does reaches the broker."
)

CLIENTS: dict[str, Client] = {
    "requests": Client("requests", True, _HTTP, _HTTP_FIX),
    "urllib3": Client("urllib3", True, _HTTP, _HTTP_FIX),
    "httpx": Client("httpx", True, _HTTP, _HTTP_FIX),
    "httpcore": Client("httpx", True, _HTTP, _HTTP_FIX),
    "pika": Client("pika", True, _AMQP, _AMQP_FIX),
    "kombu": Client("kombu", True, _AMQP, _AMQP_FIX),
    "amqp": Client("py-amqp", True, _AMQP, _AMQP_FIX),
    "redis": Client(
        "redis-py",
        None,
        "redis-py checks its pid before every command: a worker drops the inherited "
        "connection unused and opens its own.",
        "Nothing to do (redis-py handles the fork by itself).",
    ),
}


def client_library(frame: types.FrameType | None) -> str | None:
    """The outermost known client library on the stack from ``frame`` up, or None."""
    found = None
    for f in frames(frame):
        module = f.f_globals.get("__name__", "")
        top = module.split(".", 1)[0] if isinstance(module, str) else ""
        if top in CLIENTS:
            found = top
    return found
