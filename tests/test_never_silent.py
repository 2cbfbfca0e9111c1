"""Issue 17.4-5: when forkguard's own fork handling fails, the user hears of it.

Each failure is driven for real in a script that configures no logging at all, and the test
asserts what that user sees (one line on stderr) and what ``forkguard.stats()`` counts.
Also: a connection that reconnected before the fork has a new socket, and that one is the
socket forkguard silences (the fd is read again when the fork is handled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

import forkguard

from .conftest import URLS
from .forking import run_in_child


def _run_script(tmp_path: Any, body: str) -> tuple[dict[str, Any], str]:
    """Run ``body`` with no logging configured; it prints the child's stats as JSON."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


_UNKNOWN_DRIVER = """
    import json, os, socket
    import pymysql
    import forkguard

    class Wrapper:  # a driver forkguard has no adapter for: its socket is found by port
        def __init__(self, conn):
            self.conn = conn
        def close(self):
            self.conn.close()

    forkguard.install()
    conn = Wrapper(pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test"))
"""

_CHILD_REPORTS = """
    def report_from_child():
        pid = os.fork()
        if pid == 0:
            stats = forkguard.stats()  # notices the fork and handles it
            print(json.dumps(stats), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
"""


def test_a_socket_that_no_longer_matches_is_reported(tmp_path):
    body = (
        _UNKNOWN_DRIVER
        + """
    forkguard.track(conn, port=3306)
    # Something else now sits under the recorded fd number: it must not be touched.
    other = socket.socket()
    os.dup2(other.fileno(), conn.conn._sock.fileno())
    """
        + _CHILD_REPORTS
        + """
    report_from_child()
    """
    )
    stats, stderr = _run_script(tmp_path, body)
    assert stats["neutralize_failed"] == 1
    assert stats["connections_neutralized"] == 0
    assert "forkguard could not neutralize" in stderr
    assert "no longer holds the socket it was opened on" in stderr


def test_a_connection_whose_socket_cannot_be_found_is_reported(tmp_path):
    body = (
        _UNKNOWN_DRIVER
        + """
    forkguard.track(conn)  # no port: nothing to look for the socket by
    """
        + _CHILD_REPORTS
        + """
    report_from_child()
    """
    )
    stats, stderr = _run_script(tmp_path, body)
    assert stats["neutralize_failed"] == 1
    assert stats["connections_neutralized"] == 0
    assert "no socket found for it" in stderr


def test_a_failing_after_fork_step_is_reported_and_the_rest_still_runs(tmp_path):
    body = (
        f"""
    import json, os
    import sqlalchemy as sa
    from sqlalchemy import event
    import forkguard

    forkguard.install()
    engine = sa.create_engine("{URLS["pymysql"]}")
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    @event.listens_for(engine, "engine_disposed")
    def refuse(engine):
        raise RuntimeError("a user's listener that raises")
    """
        + _CHILD_REPORTS
        + """
    report_from_child()
    """
    )
    stats, stderr = _run_script(tmp_path, body)
    assert stats["fork_handling_errors"] == 1
    assert stats["connections_neutralized"] == 1  # the core step ran before, and still counts
    assert "giving mysql+pymysql://root@127.0.0.1:3306/test a fresh pool" in stderr
    assert "a user's listener that raises" in stderr


def test_a_connection_that_reconnected_before_the_fork_has_its_new_socket_silenced(
    make_engine,
):
    forkguard.install()
    engine = make_engine(URLS["pymysql"])
    raw = engine.raw_connection()
    first_session = raw.driver_connection.thread_id()
    killer = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
    with killer.cursor() as cur:
        cur.execute(f"KILL {first_session}")
    killer.close()
    driver_conn = raw.driver_connection
    driver_conn.ping(reconnect=True)  # a new socket under the same object
    session = driver_conn.thread_id()
    assert session != first_session

    def child() -> dict[str, int]:
        driver_conn.close()  # COM_QUIT: must go to /dev/null, not to the new socket
        return forkguard.stats()

    result = run_in_child(child)
    assert result["ok"], result
    with raw.driver_connection.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchone()[0] == session
    assert result["value"]["neutralize_failed"] == 0
    raw.close()


@pytest.mark.parametrize("mode", ["repair", "strict"])
def test_stats_count_only_successes(make_engine, mode):
    forkguard.install(mode=mode)
    engine = make_engine(URLS["psycopg2"])
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    result = run_in_child(forkguard.stats)
    assert result["ok"], result
    assert result["value"]["connections_neutralized"] == 1
    assert result["value"]["neutralize_failed"] == 0
    assert result["value"]["fork_handling_errors"] == 0
