"""``forkguard bench`` / ``python -m forkguard.bench`` / ``make bench``.

Runs the in-process benchmarks (hot path, fork cost) and the pre-fork server benchmark, prints
the tables, writes ``results.json`` and the charts to ``--out``, and (full runs, or with
``--docs``) regenerates ``docs/benchmarks.md`` and ``docs/memory.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

from . import instructions, machine, report
from .hotpath import BACKENDS, HotPathConfig, run_forkcost, run_hotpath
from .prefork import SERVERS, PreforkConfig, run_prefork

log = logging.getLogger("forkguard.bench")

PARTS = ("hotpath", "instructions", "fork", "prefork")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="forkguard bench",
        description="Measure forkguard's cost and preloading's savings, side by side.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (about a minute)")
    p.add_argument(
        "--out", default="bench-results", help="results directory (default: %(default)s)"
    )
    p.add_argument(
        "--only", type=_csv, default=list(PARTS), help=f"comma list of {', '.join(PARTS)}"
    )
    p.add_argument("--servers", type=_csv, default=None, help="uwsgi,gunicorn")
    p.add_argument("--workers", type=_csv, default=None, help="worker counts, e.g. 4,8")
    p.add_argument("--mb", type=float, default=None, help="the app's import-time working set")
    p.add_argument("--load-seconds", type=float, default=None)
    p.add_argument("--rounds", type=int, default=None, help="hot path rounds")
    p.add_argument(
        "--docs",
        default=None,
        help="write benchmarks.md, memory.md and img/ here (default: docs/ for a full run, "
        "nowhere for --quick)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the docs")
    p.add_argument(
        "--from-json", default=None, help="regenerate tables and docs from a results.json"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _configs(args: argparse.Namespace) -> tuple[HotPathConfig, PreforkConfig]:
    if args.quick:
        hot = HotPathConfig(
            rounds=3, query_iterations=200, bare_iterations=3000, fork_rounds=4, micro_number=50000
        )
        pre = PreforkConfig(
            workers=(2,),
            mb=16.0,
            first_load_requests_per_worker=50,
            first_load_rounds=3,
            load_seconds=1.5,
            load_rounds=3,
            settle_max_s=3.0,
            respawns=1,
        )
    else:
        hot, pre = HotPathConfig(), PreforkConfig()
    if args.rounds:
        hot.rounds = args.rounds
    if args.servers:
        bad = set(args.servers) - set(SERVERS)
        if bad:
            raise SystemExit(f"forkguard bench: unknown server(s) {sorted(bad)}; use {SERVERS}")
        pre.servers = tuple(args.servers)
    if args.workers:
        pre.workers = tuple(int(w) for w in args.workers)
    if args.mb:
        pre.mb = args.mb
    if args.load_seconds:
        pre.load_seconds = args.load_seconds
    return hot, pre


def _instructions(quick: bool) -> dict[str, Any]:
    if not instructions.available():
        log.warning("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return {"skipped": "valgrind is not installed"}
    log.info("instructions per bare checkout (callgrind)")
    if quick:
        return instructions.run_instructions(small=100, large=300, repeats=1)
    return instructions.run_instructions()


def _docs_dir(args: argparse.Namespace) -> Optional[str]:
    if args.no_docs:
        return None
    if args.docs:
        return str(args.docs)
    if args.quick:
        return None
    return "docs" if os.path.isdir("docs") else None


def _emit(doc: dict[str, Any], out: str, docs_dir: Optional[str]) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
    with open(os.path.join(out, "summary.txt"), "w") as fh:
        fh.write(report.terminal(doc) + "\n")
    written = report.charts(doc, out)
    print(report.terminal(doc))
    print(f"\nresults: {os.path.join(out, 'results.json')}; charts: {', '.join(written)}")
    if docs_dir:
        for path in report.write_docs(doc, docs_dir):
            print(f"wrote {path}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # forkguard's own INFO line per fork would flood the output of the fork benchmark.
    logging.getLogger("forkguard").setLevel(logging.WARNING)
    logging.getLogger("forkguard.bench").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.from_json:
        with open(args.from_json) as fh:
            stored: dict[str, Any] = json.load(fh)
        _emit(stored, os.path.dirname(os.path.abspath(args.from_json)), _docs_dir(args) or "docs")
        return 0
    unknown = set(args.only) - set(PARTS)
    if unknown:
        print(f"forkguard bench: unknown part(s) {sorted(unknown)}; use {PARTS}", file=sys.stderr)
        return 2
    hot_cfg, pre_cfg = _configs(args)
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "command": " ".join(["python -m forkguard.bench", *argv]),
        "quick": bool(args.quick),
        "machine": machine.describe(),
    }
    log.info("machine: %s", machine.one_line(doc["machine"]))
    backends = list(BACKENDS)
    failed = False
    try:
        if "hotpath" in args.only:
            doc["hotpath"] = run_hotpath(hot_cfg, backends)
        if "instructions" in args.only:
            doc["instructions"] = _instructions(bool(args.quick))
        if "fork" in args.only:
            doc["forkcost"] = run_forkcost(hot_cfg, backends)
        if "prefork" in args.only:
            doc["prefork"] = run_prefork(pre_cfg)
            failed = any(r.get("error") for r in doc["prefork"]["runs"])
    except Exception:
        log.exception("forkguard bench failed")
        failed = True
    doc["duration_s"] = time.monotonic() - t0
    doc["load_at_end"] = machine.load_average()
    _emit(doc, args.out, None if failed else _docs_dir(args))
    if failed:
        print(
            "forkguard bench: some measurements failed (see the log); docs not written",
            file=sys.stderr,
        )
    return 1 if failed else 0
