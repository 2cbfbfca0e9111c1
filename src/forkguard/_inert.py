"""Inherited client objects that must fail loudly in a child: AMQP connections.

An HTTP pool drops a dead connection and opens another (:mod:`._sockets`). An AMQP connection
cannot: its channels, consumers and unconfirmed publishes live on the server's side of that one
connection, and a publish on a socket pointed at /dev/null "succeeds" - the message is lost
with no error. So once the core has silenced the socket, the client object itself is made to
raise :class:`~forkguard.InheritedConnectionError` on any use, in place: its class is swapped
for a subclass that intercepts attribute access. The object stays where every reference to it
points (a module global, its channels, a producer), and the swap writes one word of it.

A few names answer instead of raising: closing (nothing to close here: the socket is the
parent's) and "are you open?" (no). Code that checks before use, or that cleans up after a
fork (Celery's pool, kombu's ``collect``), then opens a connection of its own instead of
failing; code that uses the old connection gets the error, naming where it was opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

_STATE = "_forkguard_inert"
_classes: dict[type, type] = {}


def nothing(*args: Any, **kwargs: Any) -> None:
    """What closing an inherited connection does in the child: nothing."""


def _raise_on_use(self: Any, name: str) -> Any:
    if name.startswith("__") or name == _STATE:
        return object.__getattribute__(self, name)
    error, answers = object.__getattribute__(self, _STATE)
    if name in answers:
        return answers[name]
    raise error()


def _repr(self: Any) -> str:
    # The library's own __repr__ would read attributes, and so raise inside a log call.
    return f"<{type(self).__name__}: inherited through fork(), unusable in this process>"


def _inert_class(cls: type) -> type:
    if cls not in _classes:
        _classes[cls] = type(
            f"Inherited{cls.__name__}",
            (cls,),
            {"__getattribute__": _raise_on_use, "__repr__": _repr, "__module__": cls.__module__},
        )
    return _classes[cls]


def make_inert(obj: Any, error: Callable[[], Exception], answers: Mapping[str, Any]) -> None:
    """From now on, ``obj`` raises ``error()`` on any use but the names in ``answers``."""
    if type(obj) in _classes.values():
        return
    object.__setattr__(obj, _STATE, (error, dict(answers)))
    obj.__class__ = _inert_class(type(obj))


def is_inert(obj: Any) -> bool:
    return type(obj) in _classes.values()
