"""``forkguard.install()`` called *before* Django is imported, then a real fork.

    python -m tests.integrations.apps.fg_placement_django mysql|postgresql install|none|after

As a gunicorn.conf.py, or the first lines of a wsgi.py, would: ``forkguard.install()`` runs
first, with Django not yet imported; then Django is set up (no ``forkguard.django`` in
INSTALLED_APPS, no second install), ``django.db.connection`` queries in the parent, and the
process forks (``os.fork()``). The child queries, then ``connection.close()`` as a worker's
exit or ``CONN_MAX_AGE`` would; then the parent queries again on the same connection.

Prints one JSON object: the parent's session id before and after the fork, whether Django was
imported when ``install()`` ran, and what the child saw.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from tests.forking import run_in_child

VENDOR, GUARD = sys.argv[1:3] if __name__ == "__main__" else ("mysql", "none")
DJANGO_BEFORE_INSTALL = "django" in sys.modules

if GUARD == "install":
    import forkguard

    forkguard.install()  # first: Django is not imported yet

import django  # noqa: E402  (the point of the scenario: Django comes after install())
from django.conf import settings  # noqa: E402

SESSION_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}

settings.configure(
    DEBUG=False,
    USE_TZ=True,
    INSTALLED_APPS=[],
    DATABASES={
        "default": {
            "ENGINE": f"django.db.backends.{VENDOR}",
            "NAME": "test",
            "USER": "root",
            "HOST": "127.0.0.1",
            "PORT": "3306" if VENDOR == "mysql" else "5432",
            "CONN_MAX_AGE": None,
        }
    },
)
django.setup()

if GUARD == "after":  # the control: once Django is imported, the placement that always worked
    import forkguard

    forkguard.install()


def session() -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(SESSION_SQL[VENDOR])
        return cursor.fetchone()[0]


def main() -> dict[str, Any]:
    from django.db import connection

    out: dict[str, Any] = {"django_before_install": DJANGO_BEFORE_INSTALL}
    out["parent_session"] = session()

    def child() -> dict[str, Any]:
        seen: dict[str, Any] = {"had_connection": connection.connection is not None}
        seen["session"] = session()
        connection.close()  # what CONN_MAX_AGE expiry, or a worker's exit, does
        if "forkguard" in sys.modules:
            import forkguard

            seen["stats"] = forkguard.stats()
        return seen

    out["child"] = run_in_child(child)
    try:
        out["parent_session_after"] = session()
        out["parent_error"] = None
    except Exception as exc:
        out["parent_session_after"] = None
        out["parent_error"] = f"{type(exc).__name__}: {exc}"
    return out


if __name__ == "__main__":
    print(json.dumps(main(), default=repr))
    sys.stdout.flush()
    os._exit(0)
