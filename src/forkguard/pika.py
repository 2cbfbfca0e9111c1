"""pika's ``BlockingConnection``, opened at import and inherited by every worker.

Two processes on one AMQP connection interleave frames on one channel numbering: the broker
closes the connection (``UNEXPECTED_FRAME``, ``CHANNEL_ERROR``) for both, or one process reads
the other's deliveries and confirms. And a connection cannot be silently replaced: its
channels, consumers and unconfirmed publishes exist only on the broker's side of it. So in a
child, after the core has pointed the inherited socket at /dev/null (nothing reaches the
broker), the connection object raises :class:`~forkguard.InheritedConnectionError` on any use
(:mod:`forkguard._inert`), and so does its impl, which its channels write through;
``is_open`` answers False, ``is_closed`` True and ``close()`` does
nothing, so code that checks before use opens a connection of its own.

pika has no hook that runs when a connection opens; this adapter wraps
``BlockingConnection.__init__`` (the connection is open when it returns) and records the
connection and its socket. Connections opened before ``install()`` are found on the heap.
"""

from __future__ import annotations

from typing import Any, Callable

from . import _clients, _heap, _inert

# Installed by forkguard.install() when pika is imported; nothing to call.
__all__: list[str] = []

LIBRARY = "pika"
_connections = _clients.InheritedObjects(
    LIBRARY, {"is_open": False, "is_closed": True, "close": _inert.nothing}
)


def impl_and_socket(conn: Any) -> tuple[Any, Any]:
    """The connection's impl (its channels write through it, not through ``conn``) and its
    socket. pika offers no public accessor for either (pika 1.x: ``conn._impl._transport._sock``);
    tests/test_amqp_clients.py::test_pika_private_accessors fails if they move."""
    impl = getattr(conn, "_impl", None)
    return impl, getattr(getattr(impl, "_transport", None), "_sock", None)


def _record(conn: Any, *, found: bool = False) -> None:
    impl, sock = impl_and_socket(conn)
    _connections.record(conn, sock, found=found, parts=(impl,) if impl is not None else ())


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _record(self)

    return __init__


def _wrap() -> None:
    from pika import BlockingConnection

    _clients.wrap(LIBRARY, BlockingConnection, "__init__", _recording)


def _adopt() -> None:
    from pika import BlockingConnection

    for conn in _heap.instances_of(BlockingConnection):
        _record(conn, found=True)


_ADAPTER = _connections.adapter(wrap=_wrap, adopt=_adopt)
_INTEGRATION = _ADAPTER.integration
uninstall = _ADAPTER.uninstall
