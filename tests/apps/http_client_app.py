"""A preloaded WSGI app that builds an HTTP client at import and uses it once, as apps do with
a ``requests.Session`` for an API they call (a health check, a token fetch at start-up).

Each request to ``/`` makes one GET through that session to the private HTTPS echo server and
answers whether the reply was its own. FG_GUARD=1 installs forkguard first; FG_CLIENT picks the
client (``requests`` or ``httpx``). Served by tests/test_http_clients_prefork.py.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, Callable

if os.environ.get("FG_GUARD") == "1":
    import forkguard

    forkguard.install()

ECHO_URL = os.environ["FG_ECHO_URL"]
_counter = itertools.count()


def _make_client() -> Callable[[str, dict[str, str]], str]:
    if os.environ.get("FG_CLIENT") == "httpx":
        import httpx

        client = httpx.Client(verify=os.environ["FG_ECHO_CA"], timeout=10)
        return lambda url, headers: client.get(url, headers=headers).text
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = os.environ["FG_ECHO_CA"]
    return lambda url, headers: session.get(url, headers=headers, timeout=10).text


get = _make_client()
get(f"{ECHO_URL}/startup", {"X-Echo-Id": "startup"})  # the pool now holds one connection


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    request_id = f"{os.getpid()}-{next(_counter)}"
    try:
        body = get(f"{ECHO_URL}/{request_id}", {"X-Echo-Id": request_id})
        reply = {"pid": os.getpid(), "ok": True, "own": body.startswith(f"{request_id} ")}
    except Exception as exc:  # the shared-socket failures are exceptions of many kinds
        reply = {"pid": os.getpid(), "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(reply).encode()]
