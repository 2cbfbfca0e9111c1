"""py-amqp connections - what kombu's ``pyamqp://`` / ``amqp://`` transport and Celery's
RabbitMQ broker connections are made of - opened at import and inherited by every worker.

The failure is pika's (:mod:`forkguard.pika`): interleaved frames on one connection, or a
publish on a silenced socket that is lost without an error. In a child, after the core has
pointed the inherited socket at /dev/null, the ``amqp.Connection`` raises
:class:`~forkguard.InheritedConnectionError` on any use, and so does every channel and kombu
producer on it (they reach the connection to write). ``connected`` answers False, so kombu
(``Connection.connected``, ``ensure_connection``) opens a new connection of the child's own
instead of using it; ``close()`` and ``collect()`` do nothing - py-amqp's own ``collect()``
would ``shutdown()`` the socket, which the parent shares, and unwrap TLS (a close_notify).

py-amqp has no hook that runs when a connection opens; this adapter wraps
``amqp.Connection.connect`` (public) and records the connection and ``transport.sock``.
Connections opened before ``install()`` are found on the heap.
"""

from __future__ import annotations

from typing import Any, Callable

from . import _clients, _heap, _inert

# Installed by forkguard.install() when amqp (kombu's transport) is imported; nothing to call.
__all__: list[str] = []

LIBRARY = "amqp"
_connections = _clients.InheritedObjects(
    LIBRARY,
    {"connected": False, "close": _inert.nothing, "collect": _inert.nothing},
)


def _socket_of(conn: Any) -> Any:
    # Asked only of a connected one: py-amqp warns when ``transport`` is read before connect().
    if not getattr(conn, "connected", False):
        return None
    return getattr(conn.transport, "sock", None)


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        _connections.record(self, _socket_of(self))
        return result

    return connect


def _wrap() -> None:
    from amqp import Connection

    _clients.wrap(LIBRARY, Connection, "connect", _recording)


def _adopt() -> None:
    from amqp import Connection

    for conn in _heap.instances_of(Connection):
        _connections.record(conn, _socket_of(conn), found=True)


_ADAPTER = _connections.adapter(wrap=_wrap, adopt=_adopt)
_INTEGRATION = _ADAPTER.integration
uninstall = _ADAPTER.uninstall
