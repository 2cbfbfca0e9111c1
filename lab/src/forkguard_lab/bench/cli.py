"""``forkguard bench`` / ``python -m forkguard_lab.bench`` / ``make bench``.

Runs the in-process benchmarks (hot path, ORM path, fork cost) and the pre-fork server
benchmark, prints the tables, writes ``results.json`` and the charts to ``--out``, and (full
runs, or with ``--docs``) regenerates ``docs/benchmarks.md``, ``docs/memory.md``,
``docs/img/``, ``docs/data/results.json`` (the run, without its raw per-round samples) and the
README's block between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.

``--runs N`` runs the pre-fork benchmark N times and pools the throughput of all N (the target
is on the pooled median of 3); ``--pool A.json B.json ...`` pools stored runs instead, and
``--from-json`` regenerates everything from one stored run (``make docs``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from . import figures, instructions, machine, report
from .clients import ClientsConfig, run_clients
from .hotpath import BACKENDS, HotPathConfig, run_forkcost, run_hotpath
from .orm import OrmConfig, run_orm
from .prefork import PREFORK_BACKENDS, SERVERS, PreforkConfig, run_prefork

HELP = "measure forkguard's cost and preloading's savings"

log = logging.getLogger("forkguard_lab.bench")

PARTS = ("hotpath", "orm", "clients", "instructions", "fork", "prefork")
DEFAULT_OUT = "bench-results"
# The prefork settings runs must share to be pooled.
POOL_MUST_MATCH = ("servers", "workers", "mb", "load_seconds", "backend")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="forkguard bench",
        description="Measure forkguard's cost and preloading's savings, side by side.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (a few minutes)")
    p.add_argument("--out", default=None, help=f"results directory (default: {DEFAULT_OUT})")
    p.add_argument(
        "--only", type=_csv, default=list(PARTS), help=f"comma list of {', '.join(PARTS)}"
    )
    p.add_argument("--servers", type=_csv, default=None, help="uwsgi,gunicorn")
    p.add_argument("--workers", type=_csv, default=None, help="worker counts, e.g. 4,8")
    p.add_argument("--mb", type=float, default=None, help="the app's import-time working set")
    p.add_argument("--load-seconds", type=float, default=None)
    p.add_argument(
        "--prefork-backend",
        choices=sorted(PREFORK_BACKENDS),
        default=None,
        help="the pre-fork app's database and driver (default: mariadb-pymysql)",
    )
    p.add_argument("--rounds", type=int, default=None, help="hot path and ORM rounds")
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run the pre-fork benchmark this many times and pool their throughput "
        "(the target is on the pooled median of 3)",
    )
    p.add_argument(
        "--pool",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="pool the throughput of stored runs (the first is the one the pages quote)",
    )
    p.add_argument(
        "--docs",
        default=None,
        help="write benchmarks.md, memory.md, img/ and data/results.json here (default: docs/ "
        "for a full run, --from-json or --pool; nowhere for --quick)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the docs")
    p.add_argument(
        "--readme",
        default=None,
        help="rewrite this README's bench block (default: README.md when the docs go to docs/)",
    )
    p.add_argument(
        "--from-json", default=None, help="regenerate tables and docs from a results.json"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _quick_configs() -> tuple[HotPathConfig, OrmConfig, PreforkConfig]:
    hot = HotPathConfig(
        rounds=3, query_iterations=200, bare_iterations=3000, fork_rounds=4, micro_number=50000
    )
    orm = OrmConfig(
        rounds=3,
        statement_iterations=200,
        session_iterations=100,
        server_iterations=50,
        flask_iterations=50,
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
    return hot, orm, pre


def _configs(args: argparse.Namespace) -> tuple[HotPathConfig, OrmConfig, PreforkConfig]:
    if args.quick:
        hot, orm, pre = _quick_configs()
    else:
        hot, orm, pre = HotPathConfig(), OrmConfig(), PreforkConfig()
    if args.rounds:
        hot.rounds = orm.rounds = args.rounds
    if args.servers:
        bad = set(args.servers) - set(SERVERS)
        if bad:
            raise SystemExit(f"forkguard bench: unknown server(s) {sorted(bad)}; use {SERVERS}")
        pre.servers = tuple(args.servers)
    if args.workers:
        pre.workers = tuple(int(w) for w in args.workers)
    # forkguard against dispose(close=False): in the cells of the smallest worker count.
    pre.dispose_workers = (min(pre.workers),)
    if args.mb:
        pre.mb = args.mb
    if args.load_seconds:
        pre.load_seconds = args.load_seconds
    if args.prefork_backend:
        pre.backend = args.prefork_backend
    return hot, orm, pre


def _instructions(quick: bool) -> dict[str, Any]:
    if not instructions.available():
        log.warning("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return {"skipped": "valgrind is not installed"}
    log.info("instructions per bare checkout (callgrind)")
    if quick:
        return instructions.run_instructions(small=100, large=300, repeats=1)
    return instructions.run_instructions()


def _docs_dir(args: argparse.Namespace, stored: bool) -> Optional[str]:
    if args.no_docs:
        return None
    if args.docs:
        return str(args.docs)
    if args.quick and not stored:
        return None
    return "docs" if os.path.isdir("docs") else None


def _readme(args: argparse.Namespace, docs_dir: Optional[str]) -> Optional[str]:
    if args.readme:
        return str(args.readme)
    if docs_dir == "docs" and os.path.isfile("README.md"):
        return "README.md"
    return None


def _emit(
    doc: dict[str, Any], out: Optional[str], docs_dir: Optional[str], readme: Optional[str]
) -> None:
    print(report.terminal(doc))
    if out:
        report.write_json(doc, os.path.join(out, "results.json"))
        with open(os.path.join(out, "summary.txt"), "w") as fh:
            fh.write(report.terminal(doc) + "\n")
        written = report.charts(doc, out)
        print(f"\nresults: {os.path.join(out, 'results.json')}; charts: {', '.join(written)}")
    if docs_dir:
        for path in report.write_docs(doc, docs_dir, readme):
            print(f"wrote {path}")


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            loaded: dict[str, Any] = json.load(fh)
    except FileNotFoundError:
        raise SystemExit(f"forkguard bench: no {path} (run `make bench` first)") from None
    return loaded


def pool_docs(paths: Sequence[str]) -> dict[str, Any]:
    """The first stored run, with the throughput of every run (theirs pooled too) in
    ``doc["pool"]``. Runs must share their pre-fork settings and be all quick or all full."""
    docs = [_load(p) for p in paths]
    base = docs[0]
    want = {k: base.get("prefork", {}).get("config", {}).get(k) for k in POOL_MUST_MATCH}
    for path, doc in zip(paths, docs):
        have = {k: doc.get("prefork", {}).get("config", {}).get(k) for k in POOL_MUST_MATCH}
        if have != want or doc.get("quick") != base.get("quick"):
            raise SystemExit(f"forkguard bench: {path} cannot be pooled with {paths[0]}: {have}")
    pool: list[dict[str, Any]] = []
    for path, doc in zip(paths, docs):
        for entry in figures.pool_entries(doc):
            pool.append({**entry, "label": f"{path}: {entry.get('label')}"})
    base["pool"] = pool
    return base


def _run_prefork(cfg: PreforkConfig, runs: int, doc: dict[str, Any]) -> bool:
    """The pre-fork benchmark ``runs`` times: the first is ``doc["prefork"]``, and all of them
    are pooled in ``doc["pool"]`` (with more than one). True if any failed."""
    pool = []
    failed = False
    for i in range(max(1, runs)):
        if runs > 1:
            log.info("prefork: full run %d of %d", i + 1, runs)
        date = machine.describe()["date"]
        result = run_prefork(cfg)
        if i == 0:
            doc["prefork"] = result
        pool.append(figures.pool_entry(result, f"run {i + 1} of {runs}", date))
        failed = failed or any(r.get("error") for r in result["runs"])
    if runs > 1:
        doc["pool"] = pool
    return failed


def _measure(args: argparse.Namespace, doc: dict[str, Any]) -> bool:
    """Every part asked for, into ``doc``; True if something failed."""
    hot_cfg, orm_cfg, pre_cfg = _configs(args)
    backends = list(BACKENDS)
    try:
        if "hotpath" in args.only:
            doc["hotpath"] = run_hotpath(hot_cfg, backends)
        if "orm" in args.only:
            doc["orm"] = run_orm(orm_cfg, backends)
        if "clients" in args.only:
            quick_clients = ClientsConfig(rounds=3, requests_per_round=20)
            doc["clients"] = run_clients(quick_clients if args.quick else ClientsConfig())
        if "instructions" in args.only:
            doc["instructions"] = _instructions(bool(args.quick))
        if "fork" in args.only:
            doc["forkcost"] = run_forkcost(hot_cfg, backends)
        if "prefork" in args.only:
            return _run_prefork(pre_cfg, args.runs, doc)
    except Exception:
        log.exception("forkguard bench failed")
        return True
    return False


def _stored(args: argparse.Namespace) -> int:
    doc = pool_docs(args.pool) if args.pool else _load(args.from_json)
    docs_dir = _docs_dir(args, stored=True)
    if doc.get("quick") and not args.docs:
        log.warning("a --quick run: not publishing it to docs/ (pass --docs DIR to render it)")
        docs_dir = None
    _emit(doc, args.out, docs_dir, _readme(args, docs_dir))
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM as SystemExit, so the ``finally`` blocks stop every server and drop the table
    (the default action would end the process at once and leave the servers running)."""
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # forkguard's own INFO line per fork would flood the output of the fork benchmark.
    logging.getLogger("forkguard").setLevel(logging.WARNING)
    logging.getLogger("forkguard_lab.bench").setLevel(
        logging.DEBUG if args.verbose else logging.INFO
    )
    if args.from_json or args.pool:
        return _stored(args)
    unknown = set(args.only) - set(PARTS)
    if unknown:
        print(f"forkguard bench: unknown part(s) {sorted(unknown)}; use {PARTS}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "command": " ".join(["python -m forkguard_lab.bench", *argv]),
        "quick": bool(args.quick),
        "machine": machine.describe(),
    }
    log.info("machine: %s", machine.one_line(doc["machine"]))
    failed = _measure(args, doc)
    doc["duration_s"] = time.monotonic() - t0
    doc["load_at_end"] = machine.load_average()
    docs_dir = None if failed else _docs_dir(args, stored=False)
    _emit(doc, args.out or DEFAULT_OUT, docs_dir, _readme(args, docs_dir))
    if failed:
        print(
            "forkguard bench: some measurements failed (see the log); docs not written",
            file=sys.stderr,
        )
    return 1 if failed else 0
