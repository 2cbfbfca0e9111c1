"""Smoke test: ``python -m forkguard_lab.bench --quick`` end to end on a tiny configuration.

Checks the files and fields the docs generator relies on - never timings (the machine is
shared; numbers belong in docs/benchmarks.md, from a real run).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forkguard_lab.bench import cli, figures, prefork, readme, report, targets
from forkguard_lab.bench.orm import CASES, ORM_CONFIGS
from forkguard_lab.bench.prefork import VARIANTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("bench-out")
    docs = tmp_path_factory.mktemp("bench-docs")
    home = tmp_path_factory.mktemp("home")
    readme_copy = docs / "README.md"
    readme_copy.write_text(f"# x\n\n{readme.START}\nold figures\n{readme.END}\n\nafter\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forkguard_lab.bench",
            "--quick",
            "--servers",
            "gunicorn",
            "--out",
            str(out),
            "--docs",
            str(docs),
            "--readme",
            str(readme_copy),
        ],
        capture_output=True,
        text=True,
        # A safety net for a hung run, not a timing claim: about 3 minutes on an idle 2-core
        # machine, over 7 when that machine also runs other suites.
        timeout=1200,
        check=False,
        env={**os.environ, "HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    # Three gunicorns at once, none of them leaving a control socket in the shared $HOME.
    assert not (home / ".gunicorn").exists(), list((home / ".gunicorn").iterdir())
    return out, docs, proc.stdout


def test_results_json_has_every_part(quick_run: tuple[Path, Path, str]) -> None:
    out, _, _ = quick_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["quick"] is True
    assert doc["command"].startswith("python -m forkguard_lab.bench --quick")
    machine = doc["machine"]
    for key in ("cpu", "cores_usable", "kernel", "python", "packages", "load_at_start"):
        assert machine[key], key
    assert machine["packages"]["SQLAlchemy"] != "not installed"
    assert len(doc["load_at_end"]) == 3

    hot = doc["hotpath"]
    assert set(hot["query"]) == {"mariadb", "postgresql"}
    for backend in ("mariadb", "postgresql"):
        q = hot["query"][backend]
        assert len(q["raw_ns"]["unguarded"]) == len(q["raw_ns"]["forkguard"]) == 3
        assert q["ratio_forkguard"]["median"] > 0
        bare = hot["bare"][backend]
        assert set(bare["ns"]) == {"unguarded", "noop-checkout", "forkguard"}
        assert set(bare["split_ns"]) == {"checkout_dispatch", "forkguard_own"}
        # Counted, not timed: forkguard's listener runs a few bytecodes (one byte read) on top
        # of what SQLAlchemy runs for any checkout listener, and nothing else of its own.
        code = bare["bytecodes"]
        assert code["noop-checkout"]["sqlalchemy"] > code["unguarded"]["sqlalchemy"]
        # Any reset listener costs every checkin (why forkguard has none).
        assert code["noop-reset"]["sqlalchemy"] > code["unguarded"]["sqlalchemy"]
        assert code["forkguard"]["sqlalchemy"] == code["noop-checkout"]["sqlalchemy"]
        assert 0 < code["forkguard"]["forkguard"] <= 8
        assert code["unguarded"]["forkguard"] == code["noop-checkout"]["forkguard"] == 0
        fork = doc["forkcost"]["backends"][backend]
        assert len(fork["raw_ms"]["forkguard"]) == len(fork["raw_ms"]["manual"]) == 4
        assert all(ms > 0 for ms in fork["raw_ms"]["forkguard"])
    assert hot["micro"]["fork_check_ns"] > 0

    ins = doc["instructions"]
    assert set(ins["per_op"]) == {"unguarded", "noop-checkout", "forkguard"}
    # Counted, not timed: any checkout listener costs SQLAlchemy's slow path (thousands of
    # instructions); forkguard's one byte read on top of a do-nothing listener is within the
    # count's run-to-run spread of nothing (the bytecode count above is the exact check).
    assert ins["per_op"]["unguarded"] > 10_000
    assert ins["split"]["checkout_dispatch"] > 2000
    assert abs(ins["split"]["forkguard_own"]) < ins["split"]["checkout_dispatch"] / 4

    runs = doc["prefork"]["runs"]
    pcfg = doc["prefork"]["config"]
    # Quick: one cell (2 workers), which also runs the dispose(close=False) variant and
    # forkguard on the app changed as that recipe needs it (forkguard-closed).
    assert pcfg["dispose_workers"] == [2]
    assert [(r["server"], r["variant"]) for r in runs] == [("gunicorn", v) for v in VARIANTS]
    for run in runs:
        assert run["error"] is None, run
        assert set(run["memory"]) == {"ready", "load", "gc", "warm"}
        for mem in run["memory"].values():
            assert mem["processes"] == 3  # master + 2 workers
            assert mem["pss_kb"] > 0 and mem["uss_kb"] > 0
        assert run["startup_s"] > 0 and run["respawn_median_s"] > 0
        # The replacement was forked after the kill and before it answered.
        assert len(run["respawn_fork_s"]) == len(run["respawn_s"])
        assert all(0 < f <= s for f, s in zip(run["respawn_fork_s"], run["respawn_s"]))
        assert run["throughput_rps"] > 0 and run["load_errors"] == 0
        assert len(run["gc_seconds"]) == 2
        # 3 rounds asked for, rounded up to a multiple of the cell's variants.
        assert len(run["throughput_rounds"]) == len(run["warm_throughput_rounds"]) == len(VARIANTS)
        assert run["warm_throughput_rps"] > 0 and run["load_minor_faults"] > 0
        assert run["warm_requests"] > 0 and run["warm_minor_faults"] >= 0
        assert run["warm_user_s"] > 0 and run["warm_system_s"] >= 0
        # Settled before the warm load: loaded slice by slice, stopped at the first slice at or
        # under the threshold - or at the cap, and then marked unsettled.
        slices = run["settle_faults_per_request"]
        assert run["settle_requests"] > 0 and slices and run["settle_s"] > 0
        under = [f <= pcfg["settle_faults_per_request"] for f in slices]
        assert under[:-1] == [False] * (len(slices) - 1)
        assert run["settled"] == under[-1]
        if not run["settled"]:
            assert run["settle_s"] >= pcfg["settle_max_s"]
    by_variant = {r["variant"]: r for r in runs}
    # The freeze variant's workers really froze the inherited heap; the others did not.
    assert all(n > 1000 for n in by_variant["forkguard-freeze"]["gc_freeze_counts"])
    assert by_variant["forkguard"]["gc_freeze_counts"] == [0, 0]
    # The dispose variant's post-fork hook ran once in every worker (gunicorn's post_fork).
    assert by_variant["dispose"]["postfork_runs"] == [1, 1]
    assert by_variant["forkguard"]["postfork_runs"] == [0, 0]
    assert by_variant["forkguard-closed"]["postfork_runs"] == [0, 0]
    assert by_variant["forkguard-closed"]["gc_freeze_counts"] == [0, 0]
    ratios = report.prefork_ratios(doc)
    assert ratios and all(0 < r["warm_cpu_per_request"] < 10 for r in ratios)
    # forkguard against the recipe twice: like for like (the recipe's app) first, then the
    # reported app unchanged; the 18.2 targets take the like-for-like pair.
    dispose = figures.dispose_rows(doc)
    assert [(r["variant"], r["phase"]) for r in dispose] == [
        (v, p) for v in ("forkguard-closed", "forkguard") for p in ("ready", "load", "gc", "warm")
    ]
    assert all(r["pss_vs_dispose"] > 0 and r["pss_vs_lazy"] > 0 for r in dispose)
    same_app = [
        t for t in targets.targets(doc) if "dispose(close=False) hook, same app" in t["target"]
    ]
    assert len(same_app) == 2 and all(t["met"] is not None for t in same_app), same_app


def test_results_json_has_the_orm_path(quick_run: tuple[Path, Path, str]) -> None:
    out, _, _ = quick_run
    orm = json.loads((out / "results.json").read_text())["orm"]
    assert orm["configs"] == list(ORM_CONFIGS)
    assert sorted(orm["cases"]) == sorted(CASES)
    for name, case in orm["cases"].items():
        assert case["clock"] == ("wall" if name in ("mariadb", "postgresql") else "cpu"), name
        for clock in ("wall", "cpu"):
            a = case[clock]
            assert all(len(a["raw_ns"][c]) == 3 for c in ORM_CONFIGS), name
            assert set(a["ratio"]) == set(ORM_CONFIGS) - {"unguarded"}
            assert a["ratio"]["forkguard"]["median"] > 0
            assert "median" in a["orm_check_own_ns"]


def test_results_json_has_the_http_client(quick_run: tuple[Path, Path, str]) -> None:
    """Issue 22: requests per second through a keep-alive requests.Session, with / without."""
    out, docs, stdout = quick_run
    clients = json.loads((out / "results.json").read_text())["clients"]
    assert clients["connections"] == 1  # every request reused the session's one connection
    assert clients["rps_ratio"]["n"] == 3 and clients["rps_ratio"]["median"] > 0
    assert "## 1c. HTTP clients" in (docs / "benchmarks.md").read_text()
    assert "HTTP client: requests per second" in stdout


def test_outputs_and_docs_are_written(quick_run: tuple[Path, Path, str]) -> None:
    out, docs, stdout = quick_run
    for name in ("summary.txt", report.IMG_OVERVIEW, report.IMG_MEMORY):
        assert (out / name).stat().st_size > 0, name
    for name in (report.IMG_OVERVIEW, report.IMG_MEMORY):
        assert (docs / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench_md = (docs / "benchmarks.md").read_text()
    memory_md = (docs / "memory.md").read_text()
    for text in (bench_md, memory_md):
        assert "python -m forkguard_lab.bench --quick" in text
        assert "load average" in text
    assert "## Targets" in bench_md and "Hot path" in stdout
    assert "faults / request, warm" in bench_md and "*settling*" in bench_md
    assert "## Why preload?" in memory_md and "gunicorn" in memory_md
    # Issue 18: the ORM path, forkguard against dispose(close=False), checkout as floor + own,
    # and the new targets, each marked met, missed or n/a.
    assert "## 1b. The ORM path" in bench_md and "ORM path" in stdout
    for text in (bench_md, memory_md):
        assert "forkguard against SQLAlchemy's own recipe" in text
        # Both comparisons, labelled: forkguard on the recipe's app and on the reported one.
        assert "| the recipe's: session closed at import | ready |" in text
        assert "| the reported one, unchanged | ready |" in text
        assert "not measured in this run" not in text
    for target in (
        "ORM Session.execute(), forkguard / unguarded, sqlite",
        "forkguard's own CPU ns over the floor",
        "forkguard's own instructions over the floor",
        "total PSS, forkguard / dispose(close=False) hook, same app",
        "private MB per worker, forkguard - dispose(close=False) hook, same app",
        "forkguard on the reported app (unchanged) vs dispose(close=False)",
        "respawn: fork -> serving / lazy",
        "respawn: kill -> fork",
        "throughput (warm) / lazy, pooled median of 1 run(s)",
        "throughput (first load, before copy-on-write settles)",
        "worker CPU / request (warm) / lazy",
    ):
        assert target in bench_md, target
    assert "respawn time / lazy" not in bench_md  # replaced by fork -> serving (18.4a)
    # No machine claims of its own: the cores come from the run.
    cores = json.loads((out / "results.json").read_text())["machine"]["cores_usable"]
    assert f"this {cores}-core machine" in bench_md and "2-core" not in bench_md.replace(
        f"this {cores}-core", ""
    )
    assert "about 2 µs" not in bench_md
    # The committed copy: everything the pages need, no raw per-round samples.
    data = (docs / "data" / "results.json").read_text()
    assert '"raw_ns"' not in data and '"raw_ms"' not in data
    assert report.benchmarks_md(json.loads(data)) == bench_md
    # The README block was rewritten from the run, around the markers, nothing else.
    text = (docs / "README.md").read_text()
    assert text.startswith("# x\n\n" + readme.START) and text.endswith(readme.END + "\n\nafter\n")
    assert "old figures" not in text and "Measured by `make bench`" in text


def test_docs_regenerate_from_json(quick_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, _, _ = quick_run
    regen = tmp_path / "docs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forkguard_lab.bench",
            "--from-json",
            str(out / "results.json"),
            "--docs",
            str(regen),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (regen / "benchmarks.md").read_text().startswith("# Benchmarks")


def test_runs_pool_into_one_median(quick_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    """``--pool`` over stored runs: the throughput target becomes the median of every run's
    paired rounds together, each run's own median is listed, and the docs say so."""
    out, _, _ = quick_run
    first = json.loads((out / "results.json").read_text())
    second = json.loads(json.dumps(first))
    for run in second["prefork"]["runs"]:
        run["warm_throughput_rounds"] = [x * 1.5 for x in run["warm_throughput_rounds"]]
        if run["variant"] == "lazy":
            run["warm_throughput_rounds"] = [x / 2 for x in run["warm_throughput_rounds"]]
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, doc in zip(paths, (first, second)):
        path.write_text(json.dumps(doc))
    pooled = cli.pool_docs([str(p) for p in paths])
    assert [len(e["runs"]) for e in pooled["pool"]] == [len(first["prefork"]["runs"])] * 2
    row = next(r for r in report.prefork_ratios(pooled) if r["variant"] == "forkguard")
    alone = next(r for r in report.prefork_ratios(first) if r["variant"] == "forkguard")
    assert row["warm_throughput_runs"] == 2 and alone["warm_throughput_runs"] == 1
    # Run b's forkguard / lazy pairs are twice run a's.
    assert row["warm_throughput_per_run"][1] == pytest.approx(2 * alone["warm_throughput"])
    bench_md = report.benchmarks_md(pooled)
    assert "pooled median of 2 run(s)" in bench_md and "pooled over 2 full runs" in bench_md
    # A quick run cannot be pooled with a full one.
    second["quick"] = False
    paths[1].write_text(json.dumps(second))
    with pytest.raises(SystemExit):
        cli.pool_docs([str(p) for p in paths])


def test_docs_render_a_run_stored_before_settling(
    quick_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """results.json files written before the settling phase (and its CPU counters) existed
    still render: those figures read n/a, nothing raises, no target is marked unsettled."""
    out, _, _ = quick_run
    doc = json.loads((out / "results.json").read_text())
    for key in ("settle_faults_per_request", "settle_slice_s", "settle_max_s"):
        del doc["prefork"]["config"][key]
    for run in doc["prefork"]["runs"]:
        for key in ("settle_s", "settle_requests", "settle_faults_per_request", "settled"):
            del run[key]
        del run["warm_user_s"], run["warm_system_s"]
    # ... and before issue 18: no ORM path, no dispose variant, no pool, no reset count.
    del doc["orm"], doc["machine"]["page_size"]
    doc["prefork"]["runs"] = [
        r for r in doc["prefork"]["runs"] if r["variant"] not in prefork.DISPOSE_CELL_VARIANTS
    ]
    for bare in doc["hotpath"]["bare"].values():
        del bare["bytecodes"]["noop-reset"]
    bench_md = report.benchmarks_md(doc)
    assert "1b. The ORM path" not in bench_md and "(not counted in this run)" in bench_md
    assert "forkguard against SQLAlchemy's own recipe" not in bench_md
    assert "no settling (this run predates it)" in bench_md
    assert "had not settled" not in bench_md
    cow = report.cow_rows(doc)
    assert cow and all(row[4] == "n/a" and row[-1] == "n/a" for row in cow)
    assert all(math.isnan(r["warm_cpu_per_request"]) for r in report.prefork_ratios(doc))
    assert "## All runs" in report.memory_md(doc)


def test_docs_render_a_run_stored_before_the_same_app_variant(
    quick_run: tuple[Path, Path, str],
) -> None:
    """results.json files with the dispose(close=False) variant but without forkguard on the
    recipe's app (forkguard-closed) still render: the like-for-like targets read n/a, "not
    measured in this run", and the reported app's comparison stays, labelled as such."""
    out, _, _ = quick_run
    doc = json.loads((out / "results.json").read_text())
    doc["prefork"]["runs"] = [
        r for r in doc["prefork"]["runs"] if r["variant"] != "forkguard-closed"
    ]
    assert [r["variant"] for r in figures.dispose_rows(doc)] == ["forkguard"] * 4
    same_app = [
        t for t in targets.targets(doc) if "dispose(close=False) hook, same app" in t["target"]
    ]
    assert len(same_app) == 2 and all(t["met"] is None for t in same_app)
    assert all("not measured in this run" in t["note"] for t in same_app)
    bench_md, memory_md = report.benchmarks_md(doc), report.memory_md(doc)
    for text in (bench_md, memory_md):
        assert "forkguard against SQLAlchemy's own recipe" in text
        assert "**forkguard on the recipe's app: not measured in this run**" in text
        assert "| the reported one, unchanged | ready |" in text
        assert "the recipe's: session closed at import" not in text
    assert "forkguard on the reported app (unchanged) vs dispose(close=False)" in bench_md


def test_kills_sample_the_master_cycle_evenly() -> None:
    """The i-th of n kills lands (i + 0.5) / n into the master's cycle (counted from its last
    fork), at the first such moment after the workers are back."""
    cycle = prefork.MASTER_CYCLE_S
    # Workers back 0.05 s after the fork (preloaded): the kills fall in the first cycle.
    assert [round(prefork.kill_time(100.0, i, 4, now=100.05), 3) for i in range(4)] == [
        100.125,
        100.375,
        100.625,
        100.875,
    ]
    # Back 2.3 s after the fork (lazy): the same phases, three cycles on.
    times = [prefork.kill_time(100.0, i, 4, now=102.3) for i in range(4)]
    assert [round((t - 100.0) % cycle, 3) for t in times] == [0.125, 0.375, 0.625, 0.875]
    assert all(102.3 <= t < 102.3 + cycle for t in times)


def test_runs_option_pools_full_runs(tmp_path: Path) -> None:
    """``--runs 2``: the pre-fork benchmark twice in one command, the first run's figures on
    the pages and both runs' paired rounds in the throughput targets."""
    out, docs = tmp_path / "out", tmp_path / "docs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forkguard_lab.bench",
            "--quick",
            "--only",
            "prefork",
            "--servers",
            "gunicorn",
            "--runs",
            "2",
            "--out",
            str(out),
            "--docs",
            str(docs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    doc = json.loads((out / "results.json").read_text())
    assert [e["label"] for e in doc["pool"]] == ["run 1 of 2", "run 2 of 2"]
    assert doc["pool"][0]["runs"] == [
        {k: r[k] for k in figures.POOL_KEYS if k in r} for r in doc["prefork"]["runs"]
    ]
    row = next(r for r in report.prefork_ratios(doc) if r["variant"] == "forkguard")
    assert row["warm_throughput_runs"] == 2 and len(row["warm_throughput_per_run"]) == 2
    bench_md = (docs / "benchmarks.md").read_text()
    assert "pooled median of 2 run(s)" in bench_md and "pooled over 2 full runs" in bench_md
    # The committed copy keeps the pool, so `make docs` renders the same page from it.
    data = json.loads((docs / "data" / "results.json").read_text())
    assert len(data["pool"]) == 2 and report.benchmarks_md(data) == bench_md
