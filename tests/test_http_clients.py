"""HTTP clients built before a fork: urllib3 (and so requests) and httpx, against a private
HTTPS server with keep-alive and a throwaway CA.

The parent makes one request, so its client's pool holds one open TLS connection; then 4 children
are forked and each makes its own requests through the same client object. Unprotected, the
children share the parent's TLS session: the server logs DECRYPTION_FAILED_OR_BAD_RECORD_MAC,
children get SSL errors or one another's replies, and the parent's own connection breaks. With
forkguard every child's first request opens its own connection (no byte sent on the parent's:
the parent goes on using its connection, whose TLS sequence numbers any stray record would have
broken), so the server sees exactly 1 + 4 connections and no error.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterator
from typing import Any, Callable

import pytest

requests = pytest.importorskip("requests")
urllib3 = pytest.importorskip("urllib3")
httpx = pytest.importorskip("httpx")
pytest.importorskip("trustme")  # the echo server's throwaway CA (the lab's harness)

import forkguard  # noqa: E402
from forkguard_lab.harness.https_echo import (  # noqa: E402
    ECHO_HEADER,
    HttpsEcho,
    private_https_echo,
)
from tests.forking import start_child  # noqa: E402

CHILDREN = 4
REQUESTS = 25


@pytest.fixture
def echo() -> Iterator[HttpsEcho]:
    with private_https_echo() as server:
        yield server


@pytest.fixture
def make_client(echo: HttpsEcho) -> Iterator[Callable[[str], Client]]:
    """Clients closed after the test, so no test inherits another's open connections."""
    made: list[Client] = []

    def make(kind: str) -> Client:
        made.append(Client(kind, echo))
        return made[-1]

    yield make
    for client in made:
        client.close()


class Client:
    """One client object, as an app builds it at import; ``get`` returns the reply's body."""

    def __init__(self, kind: str, server: HttpsEcho) -> None:
        self.kind, self.base = kind, server.url
        context = ssl.create_default_context(cafile=server.ca_path)
        if kind == "requests":
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA
            session.verify = server.ca_path
            self._get: Callable[[str, dict[str, str]], str] = lambda url, h: (
                session.get(url, headers=h, timeout=10).text
            )
            self.close: Callable[[], None] = session.close
        elif kind == "urllib3":
            pool = urllib3.PoolManager(ssl_context=context, retries=False)
            self._get = lambda url, h: pool.request("GET", url, headers=h, timeout=10).data.decode()
            self.close = pool.clear
        elif kind == "httpx":
            client = httpx.Client(verify=context, timeout=10)
            self._get = lambda url, h: client.get(url, headers=h).text
            self.close = client.close
        elif kind == "httpx-async":
            aclient = httpx.AsyncClient(verify=context, timeout=10)
            # One loop per process, kept open as an async app's would be; a child makes its own.
            loops: dict[int, asyncio.AbstractEventLoop] = {}

            def run(url: str, h: dict[str, str]) -> str:
                loop = loops.setdefault(os.getpid(), asyncio.new_event_loop())
                return loop.run_until_complete(aclient.get(url, headers=h)).text

            self._get = run

            def close() -> None:
                run_in_loop = loops.setdefault(os.getpid(), asyncio.new_event_loop())
                run_in_loop.run_until_complete(aclient.aclose())
                for loop in loops.values():
                    loop.close()

            self.close = close
        else:
            raise ValueError(kind)

    def get(self, request_id: str) -> str:
        return self._get(f"{self.base}/{request_id}", {ECHO_HEADER: request_id})


def _child_requests(client: Client, child: int) -> dict[str, Any]:
    errors, crossed = [], 0
    for i in range(REQUESTS):
        request_id = f"c{child}-{i}"
        try:
            body = client.get(request_id)
        except Exception as exc:  # the shared-socket failures are exceptions of many kinds
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        crossed += not body.startswith(f"{request_id} ")
    return {"errors": errors, "crossed": crossed, "stats": forkguard.stats()}


def _fork_and_use(client: Client, mechanism: str) -> dict[str, Any]:
    assert client.get("p0").startswith("p0 ")
    waits = [
        start_child(lambda n=n: _child_requests(client, n), mechanism, timeout=60)
        for n in range(CHILDREN)
    ]
    results = [wait() for wait in waits]
    try:
        parent_ok = client.get("p1").startswith("p1 ")
    except Exception:
        parent_ok = False
    return {"children": results, "parent_ok": parent_ok}


KINDS = ("requests", "urllib3", "httpx", "httpx-async")


@pytest.mark.parametrize("mechanism", ["os", "multiprocessing"])
@pytest.mark.parametrize("kind", KINDS)
def test_protected_children_get_their_own_connections(
    echo: HttpsEcho, make_client: Callable[[str], Client], kind: str, mechanism: str
) -> None:
    forkguard.install()
    client = make_client(kind)
    outcome = _fork_and_use(client, mechanism)
    for child in outcome["children"]:
        assert child["ok"], child
        value = child["value"]
        assert value["errors"] == [] and value["crossed"] == 0, value
        assert value["stats"]["connections_neutralized"] == 1, value["stats"]
    assert outcome["parent_ok"]
    assert echo.errors() == []
    # The parent kept its one connection; each child opened exactly one of its own.
    assert echo.connections() == 1 + CHILDREN


@pytest.mark.parametrize("kind", KINDS)
def test_unprotected_children_share_the_parents_tls_session(
    echo: HttpsEcho, make_client: Callable[[str], Client], kind: str
) -> None:
    """The twin: the same run without forkguard breaks (TLS errors, crossed replies, or the
    parent's own connection)."""
    client = make_client(kind)
    outcome = _fork_and_use(client, "os")
    values = [c["value"] for c in outcome["children"] if c["ok"]]
    child_errors = sum(len(v["errors"]) for v in values)
    crossed = sum(v["crossed"] for v in values)
    tls_errors = [e for e in echo.errors() if "BAD_RECORD_MAC" in e or "bad record mac" in e]
    assert child_errors or crossed or tls_errors or not outcome["parent_ok"], (
        f"no failure without forkguard: {outcome}, server: {echo.errors()}"
    )


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_install_after_the_client_connected(
    echo: HttpsEcho, make_client: Callable[[str], Client], kind: str
) -> None:
    """install() after the pool holds a connection: found on the heap, still guarded."""
    client = make_client(kind)
    assert client.get("early").startswith("early ")
    forkguard.install()
    outcome = _fork_and_use(client, "os")
    for child in outcome["children"]:
        assert child["ok"] and child["value"]["errors"] == [], child
        assert child["value"]["crossed"] == 0
    assert outcome["parent_ok"] and echo.errors() == []
    assert echo.connections() == 1 + CHILDREN


def test_install_in_the_child_warns_and_protects(
    echo: HttpsEcho, make_client: Callable[[str], Client]
) -> None:
    client = make_client("requests")

    def late_child() -> dict[str, Any]:
        forkguard.install()
        return _child_requests(client, 0)

    assert client.get("p0").startswith("p0 ")
    result = start_child(late_child, "os", timeout=60)()
    assert result["ok"], result
    assert result["value"]["errors"] == [] and result["value"]["crossed"] == 0
    assert result["value"]["stats"]["late_installs"] == 1
    assert client.get("p1").startswith("p1 ")
    assert echo.errors() == [] and echo.connections() == 2


def test_uninstall_puts_the_libraries_back() -> None:
    import httpcore
    from urllib3.util import connection

    before = (connection.create_connection, httpcore.SyncBackend.connect_tcp)
    forkguard.install()
    assert connection.create_connection is not before[0]
    assert httpcore.SyncBackend.connect_tcp is not before[1]
    forkguard.uninstall()
    assert (connection.create_connection, httpcore.SyncBackend.connect_tcp) == before
    assert "connect_tcp" in vars(httpcore.SyncBackend)
