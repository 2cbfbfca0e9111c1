"""An AppConfig whose ready() reads the database in the master: the import-time query."""

import os

from django.apps import AppConfig

SESSION_SQL = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}
MASTER: dict[str, object] = {}


class FgAppConfig(AppConfig):
    name = "fg_djproject.fgapp"

    def ready(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(SESSION_SQL[connection.vendor])
            MASTER["session"] = cursor.fetchone()[0]
        MASTER["pid"] = os.getpid()
