"""pytest plugin for the peer suites (see run.py): forkguard installed for the whole run.

Loaded by ``tests/peer/run.py`` as ``-p forkguard_peer`` in both runs of a suite, so the only
difference between them is ``FORKGUARD_PEER_INSTALL=1``:

* both runs import ``sqlalchemy.orm`` at the same point (first ``pytest_configure``), and refuse
  to run against a copy of SQLAlchemy or Flask-SQLAlchemy from the unpacked sdists instead of
  the installed one;
* with ``FORKGUARD_PEER_INSTALL=1``, ``forkguard.install()`` is called once, before any engine
  exists, and never again;
* SQLAlchemy's test_pool clears every class-level pool listener in PoolEventsTest's teardown
  (``Pool.dispatch._clear()``), forkguard's too, for every later test of the process; a second
  ``forkguard.install()`` puts back whatever is missing, as a user's would.
  (test_execute's ``Engine.dispatch._clear()`` leaves forkguard's ``handle_error``, which
  SQLAlchemy files under the dialect.) After every test the plugin checks forkguard's listeners,
  and writes to the JSON file named by ``FORKGUARD_PEER_REPORT`` the first test after which each
  one was gone. With ``FORKGUARD_PEER_REARM=1`` (run.py's default) it calls
  ``forkguard.install()`` again before the next test; with ``0`` it only counts the tests that
  started without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

_INSTALL = os.environ.get("FORKGUARD_PEER_INSTALL") == "1"
_REPORT = os.environ.get("FORKGUARD_PEER_REPORT")
_REARM = os.environ.get("FORKGUARD_PEER_REARM") == "1"
_SOURCES = os.environ.get("FORKGUARD_PEER_SOURCES")  # where run.py unpacked the sdists

_state: dict[str, Any] = {
    "installed": False,
    "listeners": None,  # forkguard's (target, event, fn) after install, if it could be read
    "removed": {},  # "Pool.checkout" -> first test after which it was gone
    "tests": 0,
    "tests_without_all": 0,  # tests that started with some of forkguard's listeners gone
    "rearmed": 0,  # tests before which missing listeners were registered again
    "note": None,
}


def _describe(target: Any, name: str) -> str:
    return f"{getattr(target, '__name__', repr(target))}.{name}"


def _forkguard_listeners() -> list[tuple[Any, str, Any]] | None:
    """forkguard's class-level SQLAlchemy listeners, from its (private) registry if it has one."""
    import forkguard.sqlalchemy as fg_sa

    listeners = getattr(fg_sa, "_listeners", None)
    if not isinstance(listeners, list):
        return None
    return [entry for entry in listeners if isinstance(entry, tuple) and len(entry) == 3]


def _check_not_unpacked(module: Any) -> None:
    if _SOURCES is None:
        return
    path = Path(module.__file__).resolve()
    if Path(_SOURCES).resolve() in path.parents:
        raise pytest.UsageError(
            f"{module.__name__} was imported from the unpacked sdist ({path}), not the installed "
            "package: run pytest as `python -s -m pytest`"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    import sqlalchemy
    import sqlalchemy.orm  # both runs import it here: forkguard.install() does

    _check_not_unpacked(sqlalchemy)
    if not _INSTALL:
        return
    import forkguard

    forkguard.install()
    _state["installed"] = forkguard.is_installed()
    listeners = _forkguard_listeners()
    if listeners is None:
        _state["note"] = "forkguard.sqlalchemy._listeners not found: listener checks skipped"
    else:
        _state["listeners"] = listeners


def pytest_sessionstart(session: pytest.Session) -> None:
    import sys

    flask_sqlalchemy = sys.modules.get("flask_sqlalchemy")
    if flask_sqlalchemy is not None:
        _check_not_unpacked(flask_sqlalchemy)


def _missing() -> list[tuple[Any, str, Any]]:
    from sqlalchemy import event

    return [entry for entry in _state["listeners"] if not event.contains(*entry)]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _state["listeners"] is None:
        return
    _state["tests"] += 1
    missing = _missing()
    if not missing:
        return
    if not _REARM:
        _state["tests_without_all"] += 1
        return
    import forkguard

    forkguard.install()
    _state["rearmed"] += 1


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # trylast: after the test's own teardown, where the suites clear class-level listeners.
    if _state["listeners"] is None:
        return
    for target, name, _ in _missing():
        _state["removed"].setdefault(_describe(target, name), item.nodeid)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _REPORT:
        return
    listeners = _state["listeners"]
    report = {
        "install": _INSTALL,
        "installed": _state["installed"],
        "listeners": None if listeners is None else [_describe(t, n) for t, n, _ in listeners],
        "removed_after": _state["removed"],
        "tests_checked": _state["tests"],
        "tests_started_without_all": _state["tests_without_all"],
        "rearm": _REARM,
        "rearmed": _state["rearmed"],
        "note": _state["note"],
    }
    Path(_REPORT).write_text(json.dumps(report, indent=2))
