from __future__ import annotations

import warnings

from django.apps import AppConfig
from django.db import connection


class ShopConfig(AppConfig):
    name = "djshop"

    def ready(self) -> None:
        # A startup check, as many projects have one: it opens the connection in the master.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # Django 5.2: "discouraged"
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
