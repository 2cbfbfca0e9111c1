"""A private HTTPS server with keep-alive, for the clients an app builds at import.

An HTTP client's pool keeps its TLS connections open between requests. Two processes that write
on one such connection interleave TLS records under one session key and sequence number: the
server sees ``DECRYPTION_FAILED_OR_BAD_RECORD_MAC`` and drops the connection, and on plain HTTP
one process reads the reply meant for the other. This server makes both visible:

* every reply echoes the request's ``X-Echo-Id`` header (and its path), so a client can tell a
  reply that answers somebody else's request;
* every TLS or protocol error is one ``ERROR`` line in the log, every accepted connection one
  ``CONNECTION`` line.

It runs in its own process (``python -m forkguard_lab.harness.https_echo``), on a free
127.0.0.1 port, with a certificate for ``127.0.0.1`` and ``localhost`` signed by a throwaway CA
made for that run; :func:`private_https_echo` starts it, hands out the CA's path, and stops it.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .prefork import ServerProcess
from .servers import ServerUnavailable, free_port

ECHO_HEADER = "X-Echo-Id"
TLS_ERROR_MARKERS = ("DECRYPTION_FAILED_OR_BAD_RECORD_MAC", "BAD_RECORD_MAC", "bad record mac")


@dataclass(frozen=True)
class HttpsEcho:
    """A running echo server: its base URL, the CA file clients must trust, and its log."""

    port: int
    ca_path: str
    log_path: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def errors(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line.startswith("ERROR ")]

    def connections(self) -> int:
        return sum(1 for line in self.log_text().splitlines() if line.startswith("CONNECTION "))


@contextmanager
def private_https_echo() -> Iterator[HttpsEcho]:
    """Start the echo server with a fresh CA; stop it and delete its files afterwards."""
    try:
        import trustme
    except ImportError as exc:  # a lab dependency; say so rather than fail later
        raise ServerUnavailable("the HTTPS echo server needs trustme: pip install trustme") from exc
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fg-https-echo-") as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca_path, chain_path = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "server.pem")
        ca.cert_pem.write_to_path(ca_path)
        cert.private_key_and_cert_chain_pem.write_to_path(chain_path)
        log_path = os.path.join(tmp, "server.log")
        argv = [sys.executable, "-m", __name__, "--port", str(port), "--cert", chain_path]
        proc = ServerProcess(argv, dict(os.environ), log_path, die_with_parent=True)
        try:
            proc.start().wait_until(lambda: _listening(log_path), 30, "https echo server")
        except RuntimeError as exc:
            proc.stop()
            raise ServerUnavailable(str(exc)) from exc
        try:
            yield HttpsEcho(port, ca_path, log_path)
        finally:
            proc.stop()


def _listening(log_path: str) -> bool:
    with open(log_path, errors="replace") as fh:
        return "LISTENING" in fh.read()


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says otherwise
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"{self.headers.get(ECHO_HEADER, '')} {self.path}".encode()
        self.send_response(200)
        self.send_header(ECHO_HEADER, self.headers.get(ECHO_HEADER, ""))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the log holds connections and errors only."""


class _TLSEchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", port), _EchoHandler)
        self.context = context
        self._lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the connection's own thread, not in the accept loop.
        self._log(f"CONNECTION {client_address[1]}")
        tls = self.context.wrap_socket(request, server_side=True)
        super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            self._log(f"DISCONNECT {client_address[1]} {type(exc).__name__}")
            return
        self._log(f"ERROR {client_address[1]} {type(exc).__name__}: {exc}")

    def _log(self, line: str) -> None:
        with self._lock:
            print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a private HTTPS echo server (keep-alive)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="PEM file: key and certificate chain")
    args = parser.parse_args(argv)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert)
    server = _TLSEchoServer(args.port, context)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    print(f"LISTENING {args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
