"""forkguard: database connections that stay safe across ``fork()``.

One line, anywhere in your app (best: before the pre-fork server forks)::

    import forkguard
    forkguard.install()

Every SQLAlchemy engine and Django connection, made before or after that call, is then
fork-safe: a child never writes a byte to a socket it inherited, gets a fresh pool, and
sessions that held an inherited connection start over. The parent keeps all its connections.
"""

from __future__ import annotations

from ._api import install, is_installed, protect, stats, track, uninstall
from ._config import MODES, configure
from ._errors import ConfigurationError, ForkguardError, InheritedConnectionError
from ._guarded import Guarded

__all__ = [
    "MODES",
    "ConfigurationError",
    "ForkguardError",
    "Guarded",
    "InheritedConnectionError",
    "configure",
    "install",
    "is_installed",
    "protect",
    "stats",
    "track",
    "uninstall",
]

__version__ = "0.1.0"
