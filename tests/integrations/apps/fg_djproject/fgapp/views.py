"""read / write / echo through Django's connection, and who answered."""

import os

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse

from .apps import MASTER, SESSION_SQL


def echo(request: HttpRequest) -> JsonResponse:
    token = request.GET["token"]
    table = settings.FG_TABLE
    with connection.cursor() as cursor:
        cursor.execute(SESSION_SQL[connection.vendor])
        session = cursor.fetchone()[0]
        cursor.execute("SELECT %s", [token])
        echoed = cursor.fetchone()[0]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (token, pid) VALUES (%s, %s)", [token, os.getpid()])
        cursor.execute(f"SELECT token FROM {table} WHERE token = %s", [token])
        row = cursor.fetchone()
    return JsonResponse(
        {
            "pid": os.getpid(),
            "session": session,
            "master_session": MASTER.get("session"),
            "master_pid": MASTER.get("pid"),
            "token": token,
            "echoed": echoed,
            "row": row[0] if row else None,
        }
    )
