"""The doctor names the network clients an app built at import by library - requests,
httpx, pika, redis-py - with the line that opened each and the fix, instead of listing
anonymous sockets; with forkguard installed, the ones it covers are information only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import doctor, mark

pytest.importorskip("requests")
pytest.importorskip("httpx")
pytest.importorskip("pika")
pytest.importorskip("redis")
pytest.importorskip("trustme")

from forkguard_lab.harness.https_echo import private_https_echo

EXPECTED = {"requests": "requests", "httpx": "httpx", "pika": "pika", "redis-py": "redis"}


@pytest.fixture
def echo_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with private_https_echo() as echo:
        monkeypatch.setenv("FG_ECHO_URL", echo.url)
        monkeypatch.setenv("FG_ECHO_CA", echo.ca_path)
        yield


def _clients(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = [f for f in doc["findings"] if f["kind"] == "client-at-import"]
    by_library = {f["data"]["library"]: f for f in found}
    assert len(by_library) == len(found), found  # one finding per client
    return by_library


@pytest.mark.parametrize("guarded", [False, True], ids=["unguarded", "forkguard"])
def test_clients_reported_by_library(
    echo_env: None, monkeypatch: pytest.MonkeyPatch, guarded: bool
) -> None:
    monkeypatch.setenv("FG_GUARD", "1" if guarded else "0")
    doc = doctor("clients.py", "--json").doc
    clients = _clients(doc)
    assert sorted(clients) == sorted(EXPECTED)
    for library, marker in EXPECTED.items():
        finding = clients[library]
        assert finding["location"] == mark("clients.py", marker), finding
        assert library in finding["title"]
    # None of them is left as an anonymous socket.
    assert not [f for f in doc["findings"] if f["kind"] == "socket-at-import"]
    assert clients["redis-py"]["severity"] == "info"  # redis-py handles the fork itself
    covered = ("requests", "httpx", "pika")
    assert {clients[c]["severity"] for c in covered} == {"info" if guarded else "warning"}
    assert "forkguard.install() covers it" in clients["requests"]["fix"]
    assert "InheritedConnectionError" in clients["pika"]["fix"]
