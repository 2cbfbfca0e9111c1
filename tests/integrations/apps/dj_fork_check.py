"""Django connections across a real fork, one scenario per process (Django's setup is global).

    python -m tests.integrations.apps.dj_fork_check SCENARIO mysql|postgresql

Prints one JSON object: what the parent and the child saw. Scenarios:

* ``persistent``: ``CONN_MAX_AGE=None`` + health checks, forkguard.django in INSTALLED_APPS; the
  child queries, then closes its connection as Django would; the parent keeps its session.
* ``adopted``: the connection is opened *before* forkguard is installed (an app earlier in
  INSTALLED_APPS); forkguard finds it anyway.
* ``install_hook``: only ``forkguard.install()``, called after Django was imported.
* ``ctypes``: libc ``fork()`` (no Python hook, like a C extension): the pid check on
  ``request_started`` runs before Django's own ``close_old_connections``.
* ``atomic``: fork inside ``transaction.atomic()``: the child cannot use the block, and its
  exit sends no ROLLBACK; the parent's write commits.
* ``unprotected``: no forkguard: the child's ``connection.close()`` ends the parent's session.
* ``strict``: ``mode="strict"``: the child's first query raises ``InheritedConnectionError``;
  closing the connection afterwards leaves the parent's session alone.
* ``warn``: ``mode="warn"``: the child reconnects, and a WARNING names the line that opened
  the inherited connection.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import uuid
import weakref
from typing import Any

import django
from django.conf import settings

from tests.forking import run_in_child

SESSION_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}


def configure(vendor: str, guarded: bool) -> None:
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["forkguard.django"] if guarded else [],
        DATABASES={
            "default": {
                "ENGINE": f"django.db.backends.{vendor}",
                "NAME": "test",
                "USER": "root",
                "HOST": "127.0.0.1",
                "PORT": "3306" if vendor == "mysql" else "5432",
                "CONN_MAX_AGE": None,
                "CONN_HEALTH_CHECKS": True,
            }
        },
    )
    django.setup()


def session(vendor: str) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(SESSION_SQL[vendor])
        return cursor.fetchone()[0]


class _WarningLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main(scenario: str, vendor: str) -> dict[str, Any]:
    from django.core.signals import request_started

    guarded = scenario != "unprotected"
    configure(vendor, guarded and scenario not in ("adopted", "install_hook"))
    from django.db import connection, transaction

    import forkguard.django

    out: dict[str, Any] = {"scenario": scenario}
    if scenario in ("strict", "warn"):
        forkguard.configure(mode=scenario)
    out["master_session"] = session(vendor)
    if scenario == "adopted":
        forkguard.install()
        forkguard.django.install()
    elif scenario == "install_hook":  # wsgi.py style: forkguard.install() once Django is imported
        forkguard.install()

    warnings = _WarningLines()  # before the fork: the fork handling logs before the child runs
    logging.getLogger("forkguard").addHandler(warnings)
    inherited = weakref.ref(connection.connection)

    def child() -> dict[str, Any]:
        request_started.send(sender=None)  # what the server's handler does first
        seen: dict[str, Any] = {"had_connection": connection.connection is not None}
        gc.collect()
        # Let go of, not freed: freeing it would copy the pages it shares with the parent.
        seen["inherited_kept"] = inherited() is not None
        try:
            seen["session"] = session(vendor)
        except forkguard.InheritedConnectionError as exc:
            seen["error"] = f"{type(exc).__name__}: {exc}"
        seen["warnings"] = warnings.lines
        connection.close()  # what CONN_MAX_AGE expiry, or a worker's exit, does
        seen["stats"] = forkguard.stats()
        return seen

    if scenario == "atomic":
        table = f"fg_i5_{uuid.uuid4().hex[:8]}"
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {table} (v INT)")
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(f"INSERT INTO {table} VALUES (1)")

                def child_in_atomic() -> dict[str, Any]:
                    try:
                        session(vendor)
                        return {"error": None}
                    except Exception as exc:
                        return {"error": f"{type(exc).__name__}: {exc}"}

                out["child"] = run_in_child(child_in_atomic)
                with connection.cursor() as cursor:
                    cursor.execute(f"INSERT INTO {table} VALUES (2)")
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT COUNT(*) FROM {table}")
                out["rows_after_commit"] = cursor.fetchone()[0]
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")
    else:
        mechanism = "ctypes" if scenario == "ctypes" else "os"
        out["child"] = run_in_child(child, mechanism=mechanism)
    try:
        out["parent_session_after"] = session(vendor)
        out["parent_error"] = None
    except Exception as exc:
        out["parent_error"] = f"{type(exc).__name__}: {exc}"
    out["stats"] = forkguard.stats()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), default=repr))
    sys.stdout.flush()
    os._exit(0)
