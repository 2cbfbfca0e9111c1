"""Fast checks of the lab's pieces: log scanning, argument errors, the table, the servers."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from forkguard_lab import ERROR_MARKER, STRATEGIES, STRATEGY_LABELS
from forkguard_lab.cli import main as lab_main
from forkguard_lab.harness import servers
from forkguard_lab.harness.logscan import classify, scan
from forkguard_lab.legend import STRATEGY_HELP
from forkguard_lab.matrix import CellResult
from forkguard_lab.report import _CHART_LABELS, format_table, legend, pss_ratios, summary
from forkguard_lab.runners import POSTFORK_STRATEGIES, build_server

LOG = f"""\
spawned uWSGI worker 1 (pid: 10, cores: 1)
ERROR {ERROR_MARKER} where=/echo pid=10 exc=OperationalError: (pymysql.err.OperationalError) \
(2013, 'Lost connection to MySQL server during query')
ERROR {ERROR_MARKER} where=save pid=11 exc=OperationalError: (MySQLdb.OperationalError) \
(2006, 'Server has gone away')
ERROR {ERROR_MARKER} where=/user pid=11 exc=PendingRollbackError: Can't reconnect until \
invalid transaction is rolled back.
Exception ignored in: <function Connection.__del__ at 0x7f>
Traceback (most recent call last):
  File "x.py", line 1, in __del__
pymysql.err.InterfaceError: (0, '')

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "y.py", line 2, in f
sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) SSL error: decryption failed \
or bad record mac
DAMN ! worker 3 (pid: 12) died, killed by signal 9 :( trying respawn ...
DAMN ! worker 2 (pid: 13) died, killed by signal 11 :( trying respawn ...
"""


def test_scan_counts_markers_and_chains_once() -> None:
    kinds = scan(LOG)
    assert kinds == {
        "2013 lost connection": 1,
        "2006 gone away": 1,
        "pending rollback": 1,
        "SSL": 1,
        "worker crash (signal 11)": 1,
    }


@pytest.mark.parametrize(
    ("exc", "msg", "kind"),
    [
        ("OperationalError", "(2014, 'Command Out of Sync')", "2014 out of sync"),
        ("OperationalError", "server closed the connection", "server closed the connection"),
        ("DatabaseError", "lost synchronization with server: got", "lost sync (libpq)"),
        ("KeyError", "'x'", "KeyError"),
    ],
)  # fmt: skip
def test_classify(exc: str, msg: str, kind: str) -> None:
    assert classify(exc, msg) == kind


def test_clean_log_has_no_errors() -> None:
    assert not scan("spawned uWSGI worker 1\n...The work of process 10 is done. Seeya!\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["--servers", "nginx"],
        ["--drivers", "sqlite"],
        ["--strategies", "prayer"],
        ["--requests", "0"],
        ["--db", "sqlite:///x.db"],
        ["--db", "mysql://root@10.0.0.1/"],
        ["--db", "mysql://root@127.0.0.1/", "--db", "mariadb://root@127.0.0.1:3307/"],
        ["--no-such-option"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_main(argv) == 2
    assert capsys.readouterr().err


def test_unknown_strategy_names_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_main(["--strategies", "none,close-all"]) == 2
    err = capsys.readouterr().err
    assert "unknown close-all " in err
    assert all(name in err for name in STRATEGIES), err


def test_build_server_rejects_an_unknown_strategy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="close-all-and-dispose"):
        build_server("uwsgi", "close-all", "mysql://x@127.0.0.1/x", str(tmp_path), max_requests=1)


def test_every_strategy_has_labels_and_postfork_ones_have_a_hook() -> None:
    assert set(STRATEGY_LABELS) == set(STRATEGIES) == set(_CHART_LABELS)
    assert set(POSTFORK_STRATEGIES) <= set(STRATEGIES)
    # The app's POSTFORK_HOOKS is read from its source: importing the app needs a database.
    spec = importlib.util.find_spec("forkguard_lab.app")
    assert spec is not None and spec.origin is not None
    app_source = Path(spec.origin).read_text()
    for name in POSTFORK_STRATEGIES:
        assert f'"{name}": _' in app_source, name
    assert set(STRATEGY_HELP) == set(STRATEGIES)
    lines = legend().splitlines()
    for name in STRATEGIES:
        assert any(ln.split()[:1] == [name] and STRATEGY_HELP[name][:40] in ln for ln in lines), (
            name
        )


def test_missing_binaries_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "mariadb_binaries", lambda: None)
    monkeypatch.setattr(servers, "postgres_bindir", lambda: None)
    msg = servers.missing_binaries_message(["mysql", "postgresql"])
    assert msg is not None
    assert "apt-get install -y mariadb-server postgresql" in msg
    assert lab_main(["--drivers", "pymysql", "--out", os.devnull + "-unused"]) == 3


def test_table_summary_and_ratio() -> None:
    fg = CellResult("uwsgi", "pymysql", "forkguard", requests=100, ok=100, workers_pss_kb=50_000)
    lazy = CellResult("uwsgi", "pymysql", "lazy", requests=100, ok=100, workers_pss_kb=100_000)
    none = CellResult(
        "uwsgi", "pymysql", "none", requests=100, ok=90, http_errors=10, db_errors=12,
        db_error_kinds={"2006 gone away": 12},
    )  # fmt: skip
    table = format_table([none, lazy, fg])
    assert "2006 gone away x12" in table and "clean" in table
    assert pss_ratios([none, lazy, fg]) == [("uwsgi", "pymysql", 0.5)]
    text = summary([none, lazy, fg])
    assert "forkguard: 1/1 cells clean" in text and "none: 1/1 cells show errors" in text


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
def test_private_server_is_stopped_and_deleted_even_on_error(kind: str) -> None:
    if servers.missing_binaries_message([kind]):
        pytest.skip(f"no {kind} server binaries")
    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="boom"), servers.private_server(kind) as srv:
        seen["dir"], seen["proc"] = srv.basedir, srv.proc
        rows = servers.admin_execute(kind, "127.0.0.1", srv.port, srv.admin_user, "SELECT 1")
        assert rows == [(1,)]
        raise RuntimeError("boom")
    assert not os.path.exists(str(seen["dir"]))
    proc = seen["proc"]
    assert proc is not None and proc.poll() is not None  # type: ignore[attr-defined]
