"""An AppConfig that reads the database while Django starts: the import-time query."""

from django.apps import AppConfig


class DjsiteConfig(AppConfig):
    name = "djsite"

    def ready(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:  # FG-MARK: django query
            cursor.execute("SELECT 1")
