"""Smoke test: ``python -m forkguard.bench --quick`` end to end on a tiny configuration.

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

from forkguard.bench import prefork, report
from forkguard.bench.prefork import VARIANTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("bench-out")
    docs = tmp_path_factory.mktemp("bench-docs")
    home = tmp_path_factory.mktemp("home")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forkguard.bench",
            "--quick",
            "--servers",
            "gunicorn",
            "--out",
            str(out),
            "--docs",
            str(docs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
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
    assert doc["command"].startswith("python -m forkguard.bench --quick")
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
        assert len(run["throughput_rounds"]) == len(run["warm_throughput_rounds"]) == 3
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
    ratios = report.prefork_ratios(doc)
    assert ratios and all(0 < r["warm_cpu_per_request"] < 10 for r in ratios)


def test_outputs_and_docs_are_written(quick_run: tuple[Path, Path, str]) -> None:
    out, docs, stdout = quick_run
    for name in ("summary.txt", report.IMG_OVERVIEW, report.IMG_MEMORY):
        assert (out / name).stat().st_size > 0, name
    for name in (report.IMG_OVERVIEW, report.IMG_MEMORY):
        assert (docs / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench_md = (docs / "benchmarks.md").read_text()
    memory_md = (docs / "memory.md").read_text()
    for text in (bench_md, memory_md):
        assert "python -m forkguard.bench --quick" in text
        assert "load average" in text
    assert "## Targets" in bench_md and "Hot path" in stdout
    assert "faults / request, warm" in bench_md and "*settling*" in bench_md
    assert "## Why preload?" in memory_md and "gunicorn" in memory_md


def test_docs_regenerate_from_json(quick_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, _, _ = quick_run
    regen = tmp_path / "docs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forkguard.bench",
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
    bench_md = report.benchmarks_md(doc)
    assert "no settling (this run predates it)" in bench_md
    assert "had not settled" not in bench_md
    cow = report.cow_rows(doc)
    assert cow and all(row[4] == "n/a" and row[-1] == "n/a" for row in cow)
    assert all(math.isnan(r["warm_cpu_per_request"]) for r in report.prefork_ratios(doc))
    assert "## All runs" in report.memory_md(doc)


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
