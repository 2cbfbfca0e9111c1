"""The lab's report: marks for cut-short cells and unmeasured memory, the legend, the pages,
and the memory reading that waits for every worker to have loaded the app.

The memory tests run real processes and read their real /proc entries: four children that
"load the app" (touch 32 MB) only when the test tells them to, and say so by writing a file -
the stand-in for a worker answering its first request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkguard_lab import STRATEGIES
from forkguard_lab.cli import main as lab_main
from forkguard_lab.harness.logscan import _KINDS, scan
from forkguard_lab.harness.procfs import pss_kb
from forkguard_lab.harness.provenance import checkout_commit
from forkguard_lab.labdocs import END, START, lab_page, write_docs
from forkguard_lab.legend import COLUMNS, STYLE_HELP, kind_help
from forkguard_lab.matrix import CellResult
from forkguard_lab.memory import answer_spans, settled_pss, settled_samples
from forkguard_lab.report import format_table, legend, notes, pss_ratios, render, summary

APP_MB = 32
# Waits for a line on stdin, "loads the app" (writes APP_MB of distinct pages), says it is
# ready in the file named by argv[1], then waits for stdin to close.
_CHILD = f"""
import sys
sys.stdin.readline()
app = b"x" * ({APP_MB} << 20)
open(sys.argv[1], "w").write("ready")
sys.stdin.read()
"""


class Workers:
    """Four real processes standing in for a server's workers."""

    def __init__(self, tmp: Path) -> None:
        self.ready = [tmp / f"ready-{n}" for n in range(4)]
        self.procs = [
            subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdin=subprocess.PIPE)
            for path in self.ready
        ]

    def pids(self) -> list[int]:
        return sorted(p.pid for p in self.procs)

    def answered(self) -> set[int]:
        """The 'probe': the workers that have loaded the app and said so."""
        return {p.pid for p, path in zip(self.procs, self.ready) if path.exists()}

    def load_app(self, n: int) -> None:
        proc = self.procs[n]
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        while not self.ready[n].exists():
            if proc.poll() is not None:
                raise RuntimeError(f"child {proc.pid} exited with {proc.returncode}")
            time.sleep(0.02)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        w.stop()


def test_memory_is_not_read_while_a_worker_is_still_loading(workers: Workers) -> None:
    for n in range(3):
        workers.load_app(n)
    loading = workers.procs[3].pid
    # What a reading taken now would have counted for that worker: far below a loaded one.
    assert pss_kb(loading) < APP_MB * 1024 // 2
    reading = settled_pss(workers.pids, workers.answered, 4, timeout=1.0)
    assert reading.total_kb == 0 and reading.per_worker_kb == []
    assert reading.not_measured == "1 of 4 workers had not answered a request within 1s"


def test_memory_is_read_once_every_worker_has_loaded(workers: Workers) -> None:
    for n in range(4):
        workers.load_app(n)
    reading = settled_pss(workers.pids, workers.answered, 4, timeout=30.0)
    assert reading.not_measured == ""
    assert len(reading.per_worker_kb) == 4
    assert min(reading.per_worker_kb) >= APP_MB * 1024
    assert reading.total_kb == sum(reading.per_worker_kb)


def test_memory_is_not_read_with_a_worker_missing(workers: Workers) -> None:
    for n in range(4):
        workers.load_app(n)
    reading = settled_pss(lambda: workers.pids()[:3], workers.answered, 4, timeout=0.5)
    assert reading.total_kb == 0
    assert reading.not_measured == "3 of 4 workers were up at the end (0s)"
    stopped = settled_pss(workers.pids, workers.answered, 4, alive=lambda: False)
    assert stopped.total_kb == 0 and stopped.not_measured == "the server stopped"


def test_memory_is_not_read_from_a_worker_that_stops_answering(workers: Workers) -> None:
    for n in range(4):
        workers.load_app(n)
    probes: list[set[int]] = []

    def probe() -> set[int]:
        got = workers.answered()
        if not probes:  # after its first answer, worker 3 starts shutting down (recycled)
            workers.ready[3].unlink()
        probes.append(got)
        return got

    reading = settled_pss(workers.pids, probe, 4, timeout=1.0)
    assert reading.total_kb == 0
    assert reading.not_measured == (
        "the workers never all answered again after a reading within 1s"
    )


def test_a_sample_counts_only_if_every_worker_answered_before_and_after_it() -> None:
    # (pid, request sent, reply received). Workers 1 and 2 answer all along; 3 and 4 were
    # recycled and answer from t=2.5 on; worker 6's last request was sent at t=3.1 (answered
    # at 3.6): it may have begun shutting down any time after 3.1.
    spans = answer_spans(
        [(1, 0.1, 0.4), (2, 0.2, 0.5), (1, 3.8, 3.9), (2, 3.7, 3.8), (3, 2.4, 2.5),
         (4, 2.5, 2.6), (3, 3.8, 3.9), (4, 3.8, 3.9), (6, 0.2, 0.3), (6, 3.1, 3.6),
         (None, 0.0, 0.1)]
    )  # fmt: skip
    assert spans[1] == (0.4, 3.8) and spans[6] == (0.3, 3.1) and None not in spans
    loaded, importing = 86_000, 12_000
    samples = [
        (1.0, {1: loaded, 2: loaded, 3: importing, 4: importing}),  # 3, 4 mid-import
        (2.0, {1: loaded, 2: loaded, 3: 60_000, 4: 70_000}),  # still mid-import
        (3.0, {1: loaded, 2: loaded, 3: loaded, 4: loaded}),
        (3.2, {1: loaded, 2: loaded, 3: loaded}),  # a worker missing
        (3.4, {1: loaded, 2: loaded, 3: loaded, 5: 6_000}),  # 5: new, never answered
        (3.5, {1: loaded, 2: loaded, 3: loaded, 6: 40_000}),  # 6: shutting down
    ]
    assert settled_samples(samples, spans, 4) == [samples[2][1]]
    # The old rule, "every worker in the sample answered at some point", kept four of these
    # samples, three of them with a worker mid-import or shutting down: its median was low.
    old = [s for _, s in samples if len(s) == 4 and all(pid in spans for pid in s)]
    assert len(old) == 4 and sorted(sum(s.values()) for s in old)[1] < 4 * loaded


def _cell(strategy: str, **kw: Any) -> CellResult:
    base: dict[str, Any] = {"requests": 300, "requests_asked": 300, "ok": 300}
    base.update(kw)
    return CellResult("uwsgi", "pymysql", strategy, **base)


def test_a_cell_cut_short_by_its_time_cap_is_marked_everywhere() -> None:
    short = _cell("lazy", requests=255, ok=255, time_cap_s=3.8, cut_off=2, workers_pss_kb=9)
    full = _cell("forkguard", workers_pss_kb=5)
    assert short.time_capped and not full.time_capped
    assert short.as_dict()["time_capped"] is True
    rows = format_table([short, full]).splitlines()
    assert rows[2].split()[3] == "255*" and rows[3].split()[3] == "300"
    assert notes([short, full]) == (
        "* uwsgi/pymysql/lazy: 255 of 300 requests, stopped at its 3.8 s time cap; "
        "2 still unanswered 3 s later were dropped"
    )
    assert "time cap: 1/2 cells stopped at their time cap" in summary([short, full])
    assert "time cap" not in summary([full])
    full.respawn_db_errors = 2
    assert notes([full]) == (
        "respawn uwsgi/pymysql/forkguard: 2 DB errors logged after a worker was killed for the "
        "respawn column (not in 'DB err')"
    )
    full.db_errors = 1  # the row already shows errors: no note needed
    assert notes([full]) == ""


def test_an_unmeasured_pss_is_shown_as_such_and_never_compared() -> None:
    lazy = _cell("lazy", pss_not_measured="1 of 4 workers had not answered a request within 20s")
    ours = _cell("forkguard", workers_pss_kb=160 * 1024)
    table = format_table([lazy, ours]).splitlines()
    assert table[2].split()[9] == "n/m" and table[3].split()[9] == "160"
    assert pss_ratios([lazy, ours]) == []
    assert (
        "memory uwsgi/pymysql: not compared: lazy PSS not measured (1 of 4 workers had not "
        "answered a request within 20s)"
    ) in summary([lazy, ours])
    assert "n/m uwsgi/pymysql/lazy: PSS not measured: 1 of 4" in notes([lazy, ours])
    measured = _cell("lazy", workers_pss_kb=320 * 1024)
    assert pss_ratios([measured, ours]) == [("uwsgi", "pymysql", 0.5)]


_LOG_WITH_EVERY_KIND = """\
ERROR FGLAB-ERROR where=/x pid=1 exc=OperationalError: (2006, 'gone away')
DAMN ! worker 2 (pid: 13) died, killed by signal 11 :( trying respawn ...
*** HARAKIRI ON WORKER 1 (pid: 10, try: 1) ***
[CRITICAL] WORKER TIMEOUT (pid:12)
Segmentation fault
"""


def test_every_error_kind_the_log_scan_can_name_is_explained() -> None:
    for _pattern, kind in _KINDS:
        assert kind_help(kind), kind
    for kind in scan(_LOG_WITH_EVERY_KIND):
        assert kind_help(kind), kind
    assert kind_help("server exited (status 3)") == (
        "the server's master process stopped, with exit status 3 (gunicorn stops when new "
        "workers keep failing to start)"
    )
    assert kind_help("KeyError") is None


def test_the_legend_explains_every_column_style_strategy_and_kind_shown() -> None:
    cells = [
        _cell("none", db_error_kinds={"pending rollback": 3, "result missing": 1, "KeyError": 1}),
        CellResult("gunicorn", "psycopg", "forkguard", error="RuntimeError: boom"),
    ]
    text = legend(cells, "fsa2")
    head = format_table(cells).splitlines()[0]
    for name, _ in COLUMNS:
        assert name in head, name
        assert any(line.strip().startswith(name + " ") for line in text.splitlines()), name
    for name in STRATEGIES:
        assert any(line.strip().startswith(name + " ") for line in text.splitlines()), name
    flat = " ".join(text.split())
    assert "pending rollback an earlier error left the session's transaction broken" in flat
    assert "result missing the driver expected rows and got none" in flat
    assert "any other name is the Python exception class" in flat
    assert "HARNESS ERROR: the lab itself failed" in flat
    assert " ".join(STYLE_HELP["fsa2"].split()) in flat
    assert "2006 gone away" not in flat  # only the kinds these cells show
    assert " ".join(STYLE_HELP["fsa3"].split()) in " ".join(legend([], "fsa3").split())


def _doc(commit: str = "abc1234") -> dict[str, Any]:
    cells = [
        _cell("none", http_errors=5, db_errors=5, db_error_kinds={"2006 gone away": 5}),
        _cell("lazy", requests=120, time_cap_s=4.0, workers_pss_kb=340 * 1024),
        _cell("forkguard", workers_pss_kb=170 * 1024),
        CellResult("uwsgi", "psycopg2", "forkguard", requests=300, requests_asked=300),
    ]
    meta = {
        "commit": commit, "date": "2026-12-03 14:00 UTC", "load_at_start": [1.5],
        "command": "forkguard lab", "quick": False, "servers": ["uwsgi"],
        "drivers": ["pymysql", "psycopg2"], "strategies": ["none", "lazy", "forkguard"],
        "requests_per_cell": 300, "max_requests": 20, "workers": 4, "elapsed_s": 61.0,
        "cpus": 2, "python": "3.11.2", "style": "fsa2",
    }  # fmt: skip
    return {"meta": meta, "cells": [c.as_dict() for c in cells]}


def test_pages_carry_the_commit_and_the_readme_block_is_replaced_in_place(
    tmp_path: Path,
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{START}\nold table\n{END}\n\nafter\n")
    page = tmp_path / "lab.md"
    assert write_docs(_doc("abc1234-dirty"), str(page), str(readme)) == [str(page), str(readme)]
    text = page.read_text()
    assert "Commit `abc1234-dirty`" in text and "commit abc1234-dirty" in text
    assert "120*" in text and "stopped at its 4.0 s time cap" in text
    new = readme.read_text()
    assert new.startswith("# x\n\nbefore\n\n" + START) and new.endswith(END + "\n\nafter\n")
    assert "old table" not in new and "Commit `abc1234-dirty`" in new
    block = new[new.index(START) : new.index(END)]
    assert "psycopg2" not in block.split("```")[1].split("forkguard:")[0]  # pymysql rows only
    assert "forkguard: 2/2 cells clean" in block  # the verdict covers every cell
    write_docs(_doc("abc1234-dirty"), None, str(readme))
    assert readme.read_text() == new  # idempotent


def test_from_json_writes_the_same_page_without_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = tmp_path / "lab.json"
    stored.write_text(json.dumps(_doc()))
    page = tmp_path / "lab.md"
    assert lab_main(["--from-json", str(stored), "--docs", str(page)]) == 0
    assert page.read_text() == lab_page(_doc())
    doc = _doc()
    cells = [CellResult.from_dict(c) for c in doc["cells"]]
    assert render(doc["meta"], cells) in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--from-json", "/nonexistent/lab.json"],
        ["--readme", "/nonexistent/README.md"],
        ["--docs", "/nonexistent/dir/lab.md"],
        ["--readme", "{no_block}"],
        ["--from-json", "{stored}", "--readme", "{no_block}"],
    ],
)
def test_bad_docs_arguments_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_block = tmp_path / "README.md"
    no_block.write_text("# a README without the lab block\n")
    stored = tmp_path / "lab.json"
    stored.write_text(json.dumps(_doc()))
    argv = [a.format(no_block=no_block, stored=stored) for a in argv]
    assert lab_main(argv) == 2
    assert "forkguard lab: " in capsys.readouterr().err
    assert no_block.read_text() == "# a README without the lab block\n"


@pytest.mark.parametrize(
    "content", ["not json", "{}", '{"cells": []}', '{"meta": {}, "cells": [1]}']
)
def test_a_bad_stored_run_exits_2_and_writes_nothing(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored, page = tmp_path / "lab.json", tmp_path / "lab.md"
    stored.write_text(content)
    assert lab_main(["--from-json", str(stored), "--docs", str(page)]) == 2
    assert "--from-json" in capsys.readouterr().err and not page.exists()


def test_checkout_commit_names_the_commit_and_a_dirty_tree(tmp_path: Path) -> None:
    assert checkout_commit(str(tmp_path)) == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert checkout_commit(str(tmp_path)) == head
    (tmp_path / "f").write_text("2")
    assert checkout_commit(str(tmp_path)) == f"{head}-dirty"
