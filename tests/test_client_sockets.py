"""The core's table of client sockets (forkguard._sockets): bounded, exact about what it
silences in a child, and never silent when recording fails."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest

import forkguard
from forkguard import _sockets
from tests.forking import start_child


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def _connect(server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    return client, peer


def test_closed_sockets_leave_the_table(listener: socket.socket) -> None:
    forkguard.install()
    for _ in range(300):
        client, peer = _connect(listener)
        _sockets.track(client, library="test")
        client.close()
        peer.close()
    # Swept whenever the table doubles: never more than the minimum sweep size.
    assert len(_sockets.all_tracked()) <= 64


def test_child_silences_open_sockets_only(listener: socket.socket) -> None:
    """An open socket is silenced in the child (its peer reads nothing from the child); one
    the parent closed before the fork is not counted, and its fd number, reused by another
    socket, is left alone."""
    forkguard.install()
    open_client, open_peer = _connect(listener)
    closed_client, closed_peer = _connect(listener)
    _sockets.track(open_client, library="test")
    _sockets.track(closed_client, library="test")
    closed_client.close()
    reused, reused_peer = _connect(listener)  # may take the closed socket's fd number
    inode = os.fstat(reused.fileno()).st_ino

    def child() -> dict[str, object]:
        os.write(open_client.fileno(), b"from the child")  # to /dev/null
        try:
            open_client.sendall(b"from the child")
        except OSError as exc:  # ENOTSOCK: the fd is /dev/null now
            sent = exc.errno
        return {
            "sent": sent,
            "open_is_devnull": stat.S_ISCHR(os.fstat(open_client.fileno()).st_mode),
            "failed": forkguard.stats()["neutralize_failed"],
            "reused_intact": os.fstat(reused.fileno()).st_ino == inode,
        }

    result = start_child(child, "os", timeout=30)()
    assert result["ok"], result
    assert result["value"] == {
        "sent": errno.ENOTSOCK,
        "open_is_devnull": True,
        "failed": 0,
        "reused_intact": True,
    }
    open_peer.settimeout(0.5)
    with pytest.raises(socket.timeout):
        open_peer.recv(100)  # nothing reached the peer
    open_client.sendall(b"parent")  # the parent's socket still works
    assert open_peer.recv(100) == b"parent"
    for sock in (open_client, open_peer, closed_peer, reused, reused_peer):
        sock.close()


def test_a_failure_to_record_is_reported_without_logging_configured() -> None:
    code = (
        "import forkguard\n"
        "from forkguard import _clients\n"
        "class Broken:\n"
        "    def fileno(self):\n"
        "        raise RuntimeError('no fd')\n"
        "forkguard.install()\n"
        "_clients.record(Broken(), 'urllib3')\n"
        "print(forkguard.stats()['fork_handling_errors'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert "recording a new urllib3 connection" in proc.stderr
