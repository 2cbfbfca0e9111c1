"""Fork hazards that are not database connections: a thread, a socket, an event loop, plus a
raw psycopg 3 connection opened without SQLAlchemy."""

import asyncio
import socket
import threading
import time

import psycopg

conn = psycopg.connect("host=127.0.0.1 user=root dbname=test")  # FG-MARK: raw connect


def _heartbeat() -> None:
    while True:
        time.sleep(1)


threading.Thread(target=_heartbeat, name="heartbeat", daemon=True).start()  # FG-MARK: thread
side_channel = socket.create_connection(("127.0.0.1", 5432))  # FG-MARK: socket
loop = asyncio.new_event_loop()


def application(environ: object, start_response: object) -> list[bytes]:
    return [b"ok"]
