"""The WSGI wrapper the lab's servers load around a user's app.

Three things the lab needs from any app and cannot ask of it:

* which worker answered: every response gets :data:`PID_HEADER` (the lab's app puts its pid
  in its JSON; a user's app has no reason to), so the memory and respawn readings know who
  served what;
* a route that touches no database (:data:`PROBE_PATH`), so the memory probe reaches every
  worker even when the app's own routes fail, and a ``hold`` (:data:`HOLD_HEADER`) that keeps
  a worker busy so a burst of probes spreads over all of them;
* request errors in the server's log: Flask logs an unhandled exception with its traceback,
  Django (``DEBUG = False``) logs none to the console, so for Django the wrapper writes the
  lab's one-line error marker from Django's ``got_request_exception`` signal.

Nothing else changes: the app is imported once, where the server imports this module, so the
master still imports it before the fork (or each worker after it, for the lazy control).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional

from .. import ERROR_MARKER
from ..harness.http import HOLD_HEADER, PID_HEADER

PROBE_PATH = "/__forkguard_lab__/health"
_MAX_HOLD = 1.0
_HOLD_ENVIRON = "HTTP_" + HOLD_HEADER.upper().replace("-", "_")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def load_app(module: str, attr: Optional[str]) -> WSGIApp:
    """Import the user's module and wrap its WSGI callable (``attr``, else ``application``,
    else ``app``)."""
    mod = importlib.import_module(module)
    names = [attr] if attr else ["application", "app"]
    for name in names:
        app = getattr(mod, name, None)
        if callable(app):
            _report_django_errors()
            return LabMiddleware(app)
    raise RuntimeError(f"{module} has no WSGI callable named {' or '.join(names)}")


class LabMiddleware:
    """Adds the worker's pid to every response; answers :data:`PROBE_PATH` itself."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # The pid is read per request: under --preload the middleware is built in the master.
        pid = (PID_HEADER, str(os.getpid()))
        _hold(environ.get(_HOLD_ENVIRON))
        if environ.get("PATH_INFO") == PROBE_PATH:
            _hold(_query_value(environ.get("QUERY_STRING", ""), "hold"))
            body = json.dumps({"pid": os.getpid()}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), pid])
            return [body]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, pid], exc_info)

        return self.app(environ, start)


def _hold(value: Optional[str]) -> None:
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return  # a probe's malformed hold only costs the probe its spreading
    if seconds > 0:
        time.sleep(min(seconds, _MAX_HOLD))


def _query_value(query: str, key: str) -> Optional[str]:
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == key:
            return value
    return None


def _report_django_errors() -> None:
    """If the app is Django's, one marker line per request that raised (see the module doc)."""
    if "django" not in sys.modules:
        return
    from django.core.signals import got_request_exception

    got_request_exception.connect(_log_request_exception, dispatch_uid="forkguard-lab")


def _log_request_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    exc = sys.exc_info()[1]
    if exc is None:
        return
    first = str(exc).splitlines()[0] if str(exc) else ""
    where = getattr(request, "path", "?")
    print(
        f"{ERROR_MARKER} where={where} pid={os.getpid()} exc={type(exc).__name__}: {first[:300]}",
        file=sys.stderr,
        flush=True,
    )
