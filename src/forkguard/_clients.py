"""What the network-client adapters share: wrap the one function through which a library opens
its connections, and record each socket it returns.

A database driver's connections reach forkguard through SQLAlchemy's and Django's events.
urllib3, httpcore, pika and py-amqp have no such hook, so each adapter
(:mod:`forkguard.urllib3`, :mod:`forkguard.httpx`, :mod:`forkguard.pika`,
:mod:`forkguard.amqp`) wraps the single function every connection of that library is opened
through, and the wrapper only records the new socket with :mod:`._sockets`: one ``fstat`` and
one walk up the stack per new connection, nothing per request. ``uninstall()`` puts the
originals back. Recording never breaks the caller's request: if it raises, the error is
reported (and counted) and the connection is returned as the library made it.
"""

from __future__ import annotations

import functools
import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from . import _inert, _integration, _origin, _report, _sockets
from ._errors import InheritedConnectionError

_MARK = "__forkguard_records__"


@dataclass(frozen=True)
class _Wrapped:
    integration: str
    owner: Any
    name: str
    original: Any
    owned: bool  # the attribute was the owner's own (not inherited from a base class)


_wrapped: list[_Wrapped] = []


def wrap(integration: str, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` by ``make(original)`` (once; a no-op if it is already ours)."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, _MARK, False):
        return
    replacement = functools.wraps(original)(make(original))
    setattr(replacement, _MARK, True)
    owned = name in vars(owner)
    setattr(owner, name, replacement)
    _wrapped.append(_Wrapped(integration, owner, name, original, owned))


def unwrap_all(integration: str) -> None:
    """Put back every original ``integration`` replaced, newest first."""
    for item in reversed([w for w in _wrapped if w.integration == integration]):
        if item.owned:
            setattr(item.owner, item.name, item.original)
        else:
            delattr(item.owner, item.name)
        _wrapped.remove(item)


def record(sock: Any, library: str) -> _sockets.TrackedSocket | None:
    """Guard a socket a client library just opened, naming the user's line that caused it."""
    try:
        return _sockets.track(sock, library=library, opened_at=_origin.opening_site(2))
    except Exception:
        _report.step_failed(f"recording a new {library} connection")
        return None


def record_found(sock: Any, library: str) -> _sockets.TrackedSocket | None:
    """Guard a socket that was already open when forkguard was installed (maybe inherited)."""
    if sock is None:
        return None
    return _sockets.track(sock, library=library, found=True)


class InheritedObjects:
    """Client connection objects that must fail loudly in a child (AMQP): each recorded with
    its socket's record; after a fork, those another process opened are made inert
    (:mod:`._inert`) once the core has silenced their sockets."""

    def __init__(self, library: str, answers: dict[str, Any]) -> None:
        self.library = library
        self.answers = answers
        self._opened: weakref.WeakKeyDictionary[Any, _sockets.TrackedSocket] = (
            weakref.WeakKeyDictionary()
        )

    def record(
        self, conn: Any, sock: Any, *, found: bool = False, parts: tuple[Any, ...] = ()
    ) -> None:
        """``parts``: objects that reach the socket without going through ``conn`` (pika's
        channels write through the connection's impl), made inert with it."""
        state = record_found(sock, self.library) if found else record(sock, self.library)
        if state is not None:
            for obj in (conn, *parts):
                self._opened[obj] = state

    def after_fork(self, parent_pid: int) -> None:
        pid = os.getpid()
        for conn, state in list(self._opened.items()):
            if state.owner_pid != pid:
                _inert.make_inert(conn, functools.partial(_for_client, state), self.answers)
                del self._opened[conn]

    def clear(self) -> None:
        self._opened.clear()

    def adapter(self, *, wrap: Callable[[], None], adopt: Callable[[], None]) -> Adapter:
        """The library's adapter, with these objects' after-fork step and forgetting."""
        return Adapter(
            self.library, wrap=wrap, adopt=adopt, after_fork=self.after_fork, forget=self.clear
        )


def _for_client(state: _sockets.TrackedSocket) -> InheritedConnectionError:
    return InheritedConnectionError.for_client(state)


def _nothing_after_fork(parent_pid: int) -> None:
    """The core's step is all: the library drops the silenced connections itself."""


class Adapter:
    """One client library's adapter, as an integration: ``wrap()`` puts the recording wrapper
    on the library's connect function, ``adopt()`` records the connections that were open
    before (a read-only heap search), ``after_fork`` is its step in a child."""

    def __init__(
        self,
        library: str,
        *,
        wrap: Callable[[], None],
        adopt: Callable[[], None],
        after_fork: Callable[[int], None] = _nothing_after_fork,
        forget: Callable[[], None] = lambda: None,
    ) -> None:
        self.library = library
        self._wrap, self._adopt, self._forget = wrap, adopt, forget
        self.installed = False
        self.integration = _integration.Integration(
            library, install=self.install, uninstall=self.uninstall, after_fork=after_fork
        )

    def install(self) -> None:
        if self.installed:
            return
        self._wrap()
        self.installed = True
        _integration.register(self.integration)
        self._adopt()

    def uninstall(self) -> None:
        unwrap_all(self.library)
        self._forget()
        _integration.unregister(self.library)
        self.installed = False
