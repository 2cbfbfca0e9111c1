"""The one HTTP client of the lab, the benchmarks and the tests: a request to 127.0.0.1.

Every caller wants the same three things from a reply - its status, its JSON body, and no
exception when a worker died or hung mid-request, since that is what the runs provoke - so
a request that got no answer returns a pseudo status instead of raising.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import urllib.parse
from typing import Any, NamedTuple, Optional

log = logging.getLogger("forkguard_lab")

# Pseudo statuses for requests that got no HTTP answer.
NO_REPLY = 0  # connection refused or reset (a worker died mid-request)
TIMED_OUT = -1  # nothing within the client's timeout (a stuck worker, or a saturated box)
STATUS_NAMES = {NO_REPLY: "no reply", TIMED_OUT: "client timeout"}
# Set by the lab's middleware around a user's app (:mod:`forkguard_lab.userapp.middleware`):
# which worker answered, and how long it should hold the request before serving it.
PID_HEADER = "X-Forkguard-Lab-Pid"
HOLD_HEADER = "X-Forkguard-Lab-Hold"


class Reply(NamedTuple):
    """A request's outcome: status (or a pseudo status), body, and the worker that answered
    (the ``pid`` of a JSON body, else :data:`PID_HEADER`; None when neither says)."""

    status: int
    body: Any
    pid: Optional[int]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    """GET on 127.0.0.1:port; (status, body): see :func:`http_request`."""
    return http_request(port, "GET", path, None, timeout)


def http_request(
    port: int, method: str, path: str, form: Optional[str], timeout: float
) -> tuple[int, Any]:
    """One request on a fresh connection (the sync workers close after each reply anyway).

    (status, body): the parsed JSON, else the text of a non-JSON reply (an error page says
    what went wrong), else None; status :data:`NO_REPLY` or :data:`TIMED_OUT` if no answer.
    """
    reply = http_reply(port, method, path, form=form, timeout=timeout)
    return reply.status, reply.body


def http_reply(
    port: int,
    method: str,
    path: str,
    *,
    form: Optional[str] = None,
    timeout: float = 10.0,
    headers: Optional[dict[str, str]] = None,
) -> Reply:
    """:func:`http_request` with extra request ``headers``, and the answering worker's pid."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = {"Connection": "close", **(headers or {})}
        if form is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=form, headers=sent)
        resp = conn.getresponse()
        body = _body(resp.read())
        return Reply(resp.status, body, _pid(body, resp.getheader(PID_HEADER)))
    except (TimeoutError, socket.timeout) as exc:  # distinct classes before Python 3.10
        log.debug("%s %s: %s", method, path, exc)
        return Reply(TIMED_OUT, None, None)
    except (OSError, http.client.HTTPException) as exc:
        log.debug("%s %s: %s", method, path, exc)
        return Reply(NO_REPLY, None, None)
    finally:
        conn.close()


def _pid(body: Any, header: Optional[str]) -> Optional[int]:
    if isinstance(body, dict) and isinstance(body.get("pid"), int):
        return int(body["pid"])
    return int(header) if header is not None and header.isdigit() else None


def _body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:2000].decode("utf-8", "replace")


def port_and_path(url: str) -> tuple[int, str]:
    """``http://127.0.0.1:PORT/path?query`` -> (PORT, ``/path?query``): for callers that
    keep a server's address as one URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise ValueError(f"not a 127.0.0.1 URL with a port: {url!r}")
    path = parts.path or "/"
    return parts.port, f"{path}?{parts.query}" if parts.query else path
