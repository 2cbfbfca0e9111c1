"""A preloaded WSGI app that builds a network client at import and uses it there, as apps do
(a token fetched from an API at start-up, a queue declared by a publisher).

FG_CLIENT picks the client:

* ``requests`` / ``httpx``: each request to ``/`` makes one GET through the import-time client
  to the private HTTPS echo server (FG_ECHO_URL, FG_ECHO_CA) and answers whether the reply was
  its own;
* ``pika``: each request publishes one message, with publisher confirms, on the connection
  opened at import - reopened first if it reports itself closed, the usual guard of a
  long-lived publisher (with forkguard an inherited connection says it is closed).

FG_GUARD=1 installs forkguard first. Served by tests/test_http_clients_prefork.py.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, Callable

if os.environ.get("FG_GUARD") == "1":
    import forkguard

    forkguard.install()

_counter = itertools.count()


def _http_client() -> Callable[[str], str]:
    url, ca = os.environ["FG_ECHO_URL"], os.environ["FG_ECHO_CA"]
    if os.environ.get("FG_CLIENT") == "httpx":
        import httpx

        client = httpx.Client(verify=ca, timeout=10)
        return lambda rid: client.get(f"{url}/{rid}", headers={"X-Echo-Id": rid}).text
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    return lambda rid: session.get(f"{url}/{rid}", headers={"X-Echo-Id": rid}, timeout=10).text


class Publisher:
    """One pika connection and a confirming channel, reopened if it says it is closed."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._open()

    def _open(self) -> None:
        import pika

        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.channel = self.conn.channel()
        self.channel.confirm_delivery()
        self.channel.queue_declare(self.queue)

    def __call__(self, rid: str) -> str:
        if self.conn.is_closed:
            self._open()
        self.channel.basic_publish("", self.queue, rid.encode())  # raises unless confirmed
        return f"{rid} published"


call: Callable[[str], str] = (
    Publisher(os.environ["FG_QUEUE"]) if os.environ.get("FG_CLIENT") == "pika" else _http_client()
)
call("startup")  # the client now holds an open connection


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    request_id = f"{os.getpid()}-{next(_counter)}"
    try:
        body = call(request_id)
        reply = {"pid": os.getpid(), "ok": True, "own": body.startswith(f"{request_id} ")}
    except Exception as exc:  # the shared-socket failures are exceptions of many kinds
        reply = {"pid": os.getpid(), "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(reply).encode()]
