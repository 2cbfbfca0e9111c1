"""forkguard's settings: one place that validates them, from arguments or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ._errors import ConfigurationError

MODES = ("repair", "warn", "strict")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass
class Settings:
    """What forkguard does in a child that inherited connections.

    ``repair`` fixes quietly (one INFO line per process), ``warn`` fixes and logs where every
    inherited connection was opened, ``strict`` refuses to let the child use one at all, so
    that a test suite or a staging deploy finds the import-time connection.

    ``resilient`` turns on SQLAlchemy's pool pre-ping for every guarded engine: a connection
    the server dropped while idle (``wait_timeout``, a restart, ``KILL``) is replaced on
    checkout instead of failing the request. It costs a round trip per checkout, so it is the
    user's choice, never a default.

    ``orm_fork_check`` adds a fork check to every ORM ``Session.execute()``: the one place a
    session that held a connection across a fork that ran *no* hook (a libc ``fork()`` from C)
    passes through before it talks. Any ``do_orm_execute`` listener makes SQLAlchemy build an
    ``ORMExecuteState`` per statement, and no pre-fork server forks that way, so it is off
    unless asked for.
    """

    mode: str = "repair"
    trace: bool = False
    freeze_gc: bool = False
    resilient: bool = False
    orm_fork_check: bool = False


settings = Settings()


def reset() -> None:
    """Back to the defaults (what a process that never configured forkguard has)."""
    defaults = Settings()
    for field in fields(Settings):
        setattr(settings, field.name, getattr(defaults, field.name))


def check_mode(value: object, source: str = "mode") -> str:
    if not isinstance(value, str) or value.strip().lower() not in MODES:
        raise ConfigurationError(
            f"forkguard: {source}={value!r} is not a valid mode; use one of: {', '.join(MODES)}"
        )
    return value.strip().lower()


def check_flag(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(
        f"forkguard: {source}={value!r} is not a valid flag; use 1/0, true/false, yes/no or on/off"
    )


def load_environment() -> None:
    """Apply ``FORKGUARD_MODE`` and ``FORKGUARD_TRACE``; a bad value is an error, not a guess."""
    mode = os.environ.get("FORKGUARD_MODE")
    if mode is not None:
        settings.mode = check_mode(mode, "FORKGUARD_MODE")
    trace = os.environ.get("FORKGUARD_TRACE")
    if trace is not None:
        settings.trace = check_flag(trace, "FORKGUARD_TRACE")
    for name in ("freeze_gc", "resilient", "orm_fork_check"):
        value = os.environ.get(f"FORKGUARD_{name.upper()}")
        if value is not None:
            setattr(settings, name, check_flag(value, f"FORKGUARD_{name.upper()}"))


def configure(
    *,
    mode: str | None = None,
    trace: bool | None = None,
    freeze_gc: bool | None = None,
    resilient: bool | None = None,
    orm_fork_check: bool | None = None,
) -> None:
    """Change forkguard's behaviour at run time; arguments left out keep their value."""
    if mode is not None:
        settings.mode = check_mode(mode)
    if trace is not None:
        settings.trace = check_flag(trace, "trace")
    if freeze_gc is not None:
        settings.freeze_gc = check_flag(freeze_gc, "freeze_gc")
    if resilient is not None:
        settings.resilient = check_flag(resilient, "resilient")
    if orm_fork_check is not None:
        settings.orm_fork_check = check_flag(orm_fork_check, "orm_fork_check")
