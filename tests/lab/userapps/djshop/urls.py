from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path


def number(request: HttpRequest, n: int) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::int * 2", [n])
        (doubled,) = cursor.fetchone()
    return JsonResponse({"n": n, "doubled": doubled})


urlpatterns = [path("double/<int:n>", number)]
