"""httpx (``Client`` and ``AsyncClient``), through httpcore, its connection pool.

Like urllib3 (:mod:`forkguard.urllib3`), httpcore keeps keep-alive connections in its pool,
offers no hook that runs when one is made, and checks each pooled connection before reuse:
``has_expired()`` polls the socket, and a socket pointed at /dev/null reads as a hang-up, so
the pool closes that connection (nothing reaches the server; an ``SSLSocket`` or anyio's TLS
stream sends no close_notify on a dropped connection) and opens the worker's own.

httpcore opens every connection through its network backend: ``httpcore.SyncBackend`` for
``httpx.Client``, ``httpcore.AnyIOBackend`` for ``httpx.AsyncClient`` on asyncio (what
httpcore's ``AutoBackend`` delegates to). This adapter wraps their ``connect_tcp`` and
``connect_unix_socket`` to record each new socket (``get_extra_info("socket")``, public API).
Trio's backend is not covered. Streams open before ``install()`` are found once on the heap.
"""

from __future__ import annotations

from typing import Any, Callable

from . import _clients, _heap

# Installed by forkguard.install() when the library is imported; nothing to call.
__all__: list[str] = []

LIBRARY = "httpx"
_CONNECTS = ("connect_tcp", "connect_unix_socket")


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(*args: Any, **kwargs: Any) -> Any:
        stream = original(*args, **kwargs)
        _clients.record(stream.get_extra_info("socket"), LIBRARY)
        return stream

    return connect


def _async_recording(original: Callable[..., Any]) -> Callable[..., Any]:
    async def connect(*args: Any, **kwargs: Any) -> Any:
        stream = await original(*args, **kwargs)
        _clients.record(stream.get_extra_info("socket"), LIBRARY)
        return stream

    return connect


def _wrap() -> None:
    import httpcore

    for name in _CONNECTS:
        _clients.wrap(LIBRARY, httpcore.SyncBackend, name, _recording)
        _clients.wrap(LIBRARY, httpcore.AnyIOBackend, name, _async_recording)


def _adopt() -> None:
    import httpcore

    for stream in [
        *_heap.instances_of(httpcore.NetworkStream),
        *_heap.instances_of(httpcore.AsyncNetworkStream),
    ]:
        _clients.record_found(stream.get_extra_info("socket"), LIBRARY)


_ADAPTER = _clients.Adapter(LIBRARY, wrap=_wrap, adopt=_adopt)
_INTEGRATION = _ADAPTER.integration
uninstall = _ADAPTER.uninstall
