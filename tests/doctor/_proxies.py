"""Things that stand between an app and its database server, for the doctor's pooler tests: a
private PgBouncer in front of the shared PostgreSQL, and a plain TCP forwarder (what a proxy
or a port mapping looks like from the client side)."""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: str) -> None:
    """Until the port accepts; fails with the log if the process exits or never listens."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"pgbouncer did not listen on {port}:\n{_tail(log)}")


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-15:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class PgBouncer:
    port: int
    max_client_conn: int
    default_pool_size: int
    reserve_pool_size: int


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(found, os.X_OK):
        raise RuntimeError("pgbouncer is not installed: run scripts/system-deps.sh")
    return found


@contextmanager
def private_pgbouncer(
    *, max_client_conn: int = 50, default_pool_size: int = 7, reserve_pool_size: int = 2
) -> Iterator[PgBouncer]:
    """A PgBouncer (transaction pooling, trust auth, user root on its admin console's
    stats_users) on a free port in front of the shared PostgreSQL; stopped and deleted after.
    PgBouncer refuses to run as root: as root it runs as the ``postgres`` system user."""
    binary, port = _pgbouncer_binary(), free_port()
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="fg_doc_pgbouncer_") as tmp:
        log = os.path.join(tmp, "pgbouncer.log")
        with open(os.path.join(tmp, "users.txt"), "w") as fh:
            fh.write('"root" ""\n')
        with open(os.path.join(tmp, "pgbouncer.ini"), "w") as fh:
            fh.write(
                "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {tmp}/users.txt\npool_mode = transaction\n"
                f"max_client_conn = {max_client_conn}\ndefault_pool_size = {default_pool_size}\n"
                f"reserve_pool_size = {reserve_pool_size}\nstats_users = root\n"
                f"logfile = {log}\n"
            )
        if as_root:
            user = pwd.getpwnam("postgres")
            os.chmod(tmp, 0o755)
            for name in ("", "users.txt", "pgbouncer.ini"):
                os.chown(os.path.join(tmp, name), user.pw_uid, user.pw_gid)
        argv = [binary, *(["-u", "postgres"] if as_root else []), f"{tmp}/pgbouncer.ini"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_port(port, proc, log)
            yield PgBouncer(port, max_client_conn, default_pool_size, reserve_pool_size)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([a, b], [], [], 60)
            if not readable:
                return
            for src in readable:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


@contextmanager
def tcp_forwarder(target_port: int) -> Iterator[int]:
    """Forward a free local port to 127.0.0.1:``target_port``; yields the local port."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()

    thread = threading.Thread(target=serve, name="fg-doc-forwarder", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(timeout=10)
