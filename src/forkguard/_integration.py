"""The small shape every integration has, and the one list of the installed ones.

An integration (SQLAlchemy, Django) knows one library's objects: how to find the connections
it holds, and what to reset in a child once the core has silenced their sockets. The core
knows integrations only through this shape, and runs their after-fork steps in one fixed
order - :data:`KNOWN`'s - whatever order they were installed in.

Integrations are found where they are, when they are needed: ``install()`` installs those
whose library is imported, and so does the fork handling (in the parent right before an
``os.fork()``, and in the child), so a library imported after ``install()`` is guarded with no
second call.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Integration:
    name: str
    install: Callable[[], None]
    uninstall: Callable[[], None]
    # Runs in every child after the core silenced the inherited sockets; gets the parent's pid.
    # Each integration module keeps its instance as ``_INTEGRATION``.
    after_fork: Callable[[int], None]


# (name, the module whose presence means the library is in use, forkguard's module for it),
# in the order their after-fork steps run.
KNOWN: tuple[tuple[str, str, str], ...] = (
    ("sqlalchemy", "sqlalchemy", "forkguard.sqlalchemy"),
    ("django", "django.db", "forkguard.django"),
    ("urllib3", "urllib3", "forkguard.urllib3"),
    ("httpx", "httpcore", "forkguard.httpx"),
    ("pika", "pika", "forkguard.pika"),
    ("amqp", "amqp", "forkguard.amqp"),
)
_ORDER = {name: index for index, (name, _, _) in enumerate(KNOWN)}
_installed: dict[str, Integration] = {}


def register(integration: Integration) -> None:
    """Called by an integration's own ``install()``."""
    _installed[integration.name] = integration


def unregister(name: str) -> None:
    _installed.pop(name, None)


def installed() -> list[Integration]:
    """The installed integrations, in after-fork order."""
    return sorted(_installed.values(), key=lambda i: _ORDER.get(i.name, len(_ORDER)))


def discover() -> None:
    """Install every known integration whose library is imported and that is not installed."""
    for name, library, module in KNOWN:
        if name not in _installed and library in sys.modules:
            integration: Integration = importlib.import_module(module)._INTEGRATION
            integration.install()


def uninstall_all() -> None:
    for integration in reversed(installed()):
        integration.uninstall()
    _installed.clear()
