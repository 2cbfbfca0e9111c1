"""Issue 17.7: ``Guarded`` is one connection per process and thread, and no lock is held
while the user's connect function runs, so a fork while another thread is inside it cannot
hang the child."""

from __future__ import annotations

import threading
from typing import Any

import pymysql

import forkguard

from .forking import run_in_child


def _connect() -> Any:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")


def _session(db: forkguard.Guarded[Any]) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return int(cur.fetchone()[0])


def test_a_fork_while_another_thread_is_connecting_does_not_hang_the_child():
    inside, release = threading.Event(), threading.Event()

    def slow_connect() -> Any:
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            release.wait(10)
        return _connect()

    db = forkguard.Guarded(slow_connect)
    worker = threading.Thread(target=db.get)
    worker.start()
    assert inside.wait(10)
    try:
        result = run_in_child(lambda: _session(db), timeout=10)  # the thread is mid-connect
    finally:
        release.set()
        worker.join(10)
    assert result["ok"], result
    db.close()


def test_each_thread_has_its_own_connection():
    db = forkguard.Guarded(_connect)
    sessions: list[int] = []
    threads = [threading.Thread(target=lambda: sessions.append(_session(db))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    sessions.append(_session(db))
    assert len(set(sessions)) == 4
    db.close()
