"""``forkguard lab``: run the matrix and report it.

Exit status: 0 when every forkguard cell is clean, 1 when one is not (or a cell failed in the
harness), 2 for bad arguments, 3 when database server binaries are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Iterator, Optional, Sequence

from . import DRIVERS, POOLED_DRIVERS, STRATEGIES
from .harness.https_echo import private_https_echo
from .harness.servers import ServerUnavailable, missing_binaries_message
from .labdocs import END as LAB_END
from .labdocs import START as LAB_START
from .labdocs import cells_of, write_docs
from .matrix import CellResult, Target, run_cell
from .options import UsageError, csv_list, targets_from_urls
from .report import Progress, ensure_dir, render, write_json, write_png
from .runners import SERVERS
from .schedule import cell_workdir, database_targets, pooled_targets, run_budgeted, run_facts

HELP = "reproduce the fork bug under uWSGI/gunicorn; compare every fix"

log = logging.getLogger("forkguard_lab")


@dataclass(frozen=True)
class Preset:
    """What runs when the user names nothing: ``--quick`` or the full matrix."""

    servers: tuple[str, ...]
    drivers: tuple[str, ...]
    strategies: tuple[str, ...]
    requests: int
    budget: float


QUICK = Preset(
    servers=("uwsgi", "gunicorn"),
    drivers=("pymysql",),
    strategies=("none", "dispose", "lazy", "forkguard"),
    requests=300,
    budget=100.0,
)
FULL = Preset(
    servers=SERVERS,
    drivers=tuple(DRIVERS),
    strategies=STRATEGIES,
    requests=400,
    budget=600.0,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="forkguard lab",
        description=(
            "Rebuild the app from a 'MySQL server has gone away' bug report (Flask + "
            "Flask-SQLAlchemy, connection opened at import), run it under uWSGI and gunicorn "
            "with 4 preforked workers, and compare every known fix side by side: the user's "
            "two post-fork hooks (strategies dispose and close-all-and-dispose), SQLAlchemy's "
            "dispose(close=False), lazy loading and forkguard.install(). Starts private "
            "throwaway MariaDB/PostgreSQL servers unless --db is given."
        ),
    )
    _add_cell_options(p)
    _add_load_options(p)
    _add_output_options(p)
    _add_app_options(p)
    return p


def _add_app_options(p: argparse.ArgumentParser) -> None:
    """``--app``: the user's own app instead of the lab's (see :mod:`.userapp`)."""
    g = p.add_argument_group(
        "your own app",
        "Run your WSGI app instead of the lab's: uwsgi and gunicorn, each with strategies "
        "none (preloaded as deployed), forkguard (forkguard.install() first in the WSGI "
        "module) and lazy (the control). Example: forkguard lab --app myproject.wsgi --url "
        "/ --url /items --env DATABASE_URL={postgresql} --setup 'python manage.py migrate'",
    )
    g.add_argument(
        "--app",
        metavar="TARGET",
        help="package.module:app, a Django project's wsgi module (package.wsgi), a uWSGI "
        ".ini or a gunicorn config .py (its module, chdir and env are used)",
    )
    g.add_argument("--chdir", metavar="DIR", help="the app's directory (default: here)")
    g.add_argument(
        "--name",
        help="what the table and --docs call the app (default: TARGET's module:app)",
    )
    g.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="[METHOD] PATH",
        help="a URL path to load, GET unless a method is given (repeat for more)",
    )
    g.add_argument("--urls", metavar="FILE", help="URL paths, one per line ([METHOD] PATH)")
    g.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the app; {mysql} / {postgresql} (or {postgresql+psycopg2}, "
        "{postgresql.port}, ...) is a fresh database per cell on a private server (or --db)",
    )
    g.add_argument(
        "--setup",
        metavar="CMD",
        help="shell command run in the app's directory before each cell's server starts, "
        "with the cell's environment (migrations, fixtures)",
    )


def _add_cell_options(p: argparse.ArgumentParser) -> None:
    """Which cells run (server x driver x strategy), against which database servers."""
    p.add_argument(
        "--quick",
        action="store_true",
        help="a subset that takes about 2 minutes on an idle 2-core machine: "
        "uwsgi+gunicorn x pymysql x none, dispose, lazy, forkguard",
    )
    p.add_argument(
        "--db",
        action="append",
        default=[],
        metavar="URL",
        help="use this server instead of a private one (mysql://... or "
        "postgresql://...; at most one per backend). The lab creates and drops "
        "databases named fg_lab_*; it needs CREATE DATABASE rights",
    )
    p.add_argument("--servers", help=f"comma list of {', '.join(SERVERS)}")
    p.add_argument("--drivers", help=f"comma list of {', '.join(DRIVERS)}")
    p.add_argument("--strategies", help=f"comma list of {', '.join(STRATEGIES)}")


def _add_load_options(p: argparse.ArgumentParser) -> None:
    """How each cell runs: how many requests, how hard, for how long, which app style."""
    p.add_argument("--requests", type=int, help="requests per cell (default 400; quick 300)")
    p.add_argument(
        "--max-requests",
        type=int,
        default=20,
        help="workers recycle after this many requests, so the master re-forks (default 20)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds for the whole run; each cell's load is capped to its share, and "
        "cells that reach their cap are marked (default 600; quick 100)",
    )
    p.add_argument(
        "--style",
        choices=("fsa2", "fsa3"),
        default="fsa2",
        help="fsa2 (default, as in the bug report: app context pushed at import, session "
        "holds its connection) or fsa3 (with app.app_context(): connection pooled)",
    )
    p.add_argument(
        "--clients",
        action="store_true",
        help="the app also calls an HTTPS API (a private echo server, keep-alive) through a "
        "requests.Session it builds and uses at import, again in every /echo request",
    )


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """Where the results go: the output directory, JSON, logs and the generated pages."""
    p.add_argument("--out", default="lab-results", help="output directory (default ./lab-results)")
    p.add_argument(
        "--json", action="store_true", help="print the JSON document on stdout instead of the table"
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep each cell's server log under OUT/logs"
    )
    p.add_argument(
        "--docs",
        metavar="PAGE",
        help="also write this Markdown page (docs/lab.md) from the run, with its commit",
    )
    p.add_argument(
        "--readme",
        metavar="README",
        help="also rewrite the lab block (<!-- lab:start --> ... <!-- lab:end -->) of this file",
    )
    p.add_argument(
        "--from-json",
        metavar="LAB_JSON",
        help="run nothing: write --docs / --readme (and print the text) from a stored lab.json",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the harness's steps")


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class Plan:
    """What one run measures, from the arguments and the preset."""

    servers: list[str]
    drivers: list[str]
    strategies: list[str]
    requests: int
    budget: float
    given: dict[str, Target]

    @property
    def cells(self) -> list[tuple[str, str, str]]:
        return [(s, d, st) for s in self.servers for d in self.drivers for st in self.strategies]

    @property
    def backends(self) -> list[str]:
        return sorted({DRIVERS[d][0] for d in self.drivers})


def _plan(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    servers = csv_list(args.servers, SERVERS, "servers") if args.servers else list(base.servers)
    drivers = (
        csv_list(args.drivers, list(DRIVERS), "drivers") if args.drivers else list(base.drivers)
    )
    strategies = (
        csv_list(args.strategies, STRATEGIES, "strategies")
        if args.strategies
        else list(base.strategies)
    )
    requests = args.requests if args.requests is not None else base.requests
    budget = args.budget if args.budget is not None else base.budget
    if requests < 1 or args.max_requests < 1 or args.concurrency < 1 or budget <= 0:
        raise UsageError("--requests, --max-requests, --concurrency and --budget must be > 0")
    _check_pages(args)
    return Plan(servers, drivers, strategies, requests, budget, targets_from_urls(args.db))


def _check_pages(args: argparse.Namespace) -> None:
    """Before anything runs: --docs can be written, --readme has the lab block."""
    if args.docs and not os.path.isdir(os.path.dirname(os.path.abspath(args.docs))):
        raise UsageError(f"--docs {args.docs}: no such directory")
    if args.readme:
        try:
            with open(args.readme, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"--readme {args.readme}: {exc.strerror}") from exc
        if LAB_START not in text or LAB_END not in text:
            raise UsageError(f"--readme {args.readme}: no {LAB_START} ... {LAB_END} block")


def _run_cells(
    plan: Plan, args: argparse.Namespace, out_dir: str, progress: Progress
) -> list[CellResult]:
    """Every cell of the plan, each load capped to its share of what is left of the budget."""
    with contextlib.ExitStack() as stack:
        targets = database_targets(stack, plan.backends, plan.given, progress)
        modes = sorted({POOLED_DRIVERS[d] for d in plan.drivers if d in POOLED_DRIVERS})
        pooled = pooled_targets(stack, targets["postgresql"], modes, progress) if modes else {}
        workdir = cell_workdir(stack, args.keep_logs, out_dir)
        if args.clients:
            stack.enter_context(_https_api(progress))
        cells = plan.cells

        def target(driver: str) -> Target:
            mode = POOLED_DRIVERS.get(driver)
            return pooled[mode] if mode else targets[DRIVERS[driver][0]]

        def run_one(n: int, time_cap: float) -> CellResult:
            server, driver, strategy = cells[n]
            return run_cell(
                server,
                driver,
                strategy,
                target(driver),
                index=n,
                workdir=workdir,
                requests=plan.requests,
                max_requests=args.max_requests,
                concurrency=args.concurrency,
                time_cap=time_cap,
                style=args.style,
                respawn_timeout=5.0,
                progress=progress.advance,
            )

        labels = [" / ".join(cell) for cell in cells]
        return run_budgeted(labels, plan.budget, plan.requests, progress, run_one)


@contextlib.contextmanager
def _https_api(progress: Progress) -> Iterator[None]:
    """``--clients``: a private HTTPS echo server for the whole run; every cell's app (its
    environment is a copy of this process's) finds it in FORKGUARD_LAB_CLIENT_URL / _CA."""
    progress.cell("starting a private HTTPS echo server (--clients)")
    with private_https_echo() as echo:
        names = {"FORKGUARD_LAB_CLIENT_URL": echo.url, "FORKGUARD_LAB_CLIENT_CA": echo.ca_path}
        os.environ.update(names)
        try:
            yield
        finally:
            for name in names:
                os.environ.pop(name, None)


def _meta(
    plan: Plan, args: argparse.Namespace, argv: Sequence[str], elapsed: float
) -> dict[str, Any]:
    return {
        "command": ("forkguard lab " + " ".join(argv)).strip(),
        "quick": bool(args.quick),
        "servers": plan.servers,
        "drivers": plan.drivers,
        "strategies": plan.strategies,
        "requests_per_cell": plan.requests,
        "max_requests": args.max_requests,
        "concurrency": args.concurrency,
        "style": args.style,
        "clients": bool(args.clients),
        "workers": 4,
        "elapsed_s": round(elapsed, 1),
        "databases": {b: ("given" if b in plan.given else "private") for b in plan.backends},
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _emit(doc: dict[str, Any], args: argparse.Namespace, wrote: list[str]) -> None:
    """Print the text (or the JSON) and write the pages asked for."""
    text = render(doc["meta"], cells_of(doc))
    wrote += write_docs(doc, args.docs, args.readme)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(text)
        print(f"\nwrote {', '.join(wrote)}")


def _from_json(args: argparse.Namespace) -> int:
    """``--from-json``: the pages and the text again from a stored run, measuring nothing."""
    try:
        with open(args.from_json) as fh:
            doc = json.load(fh)
        render(doc["meta"], cells_of(doc))  # checks the document before anything is written
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"forkguard lab: --from-json {args.from_json}: {exc}", file=sys.stderr)
        return 2
    _emit(doc, args, [])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    arglist = list(argv) if argv is not None else sys.argv[1:]
    try:
        args = parser.parse_args(arglist)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.app:
        if args.clients:
            print("forkguard lab: --clients is a variant of the lab's own app, not of --app's",
                  file=sys.stderr)  # fmt: skip
            return 2
        from .userapp.run import main as run_app

        return _interruptible(lambda: run_app(args, arglist))
    try:
        if args.from_json:
            _check_pages(args)
            return _from_json(args)
        plan = _plan(args)
    except UsageError as exc:
        print(f"forkguard lab: {exc}", file=sys.stderr)
        return 2
    missing = missing_binaries_message([b for b in plan.backends if b not in plan.given])
    if missing:
        print(missing, file=sys.stderr)
        return 3
    return _interruptible(lambda: _run_and_report(plan, args, arglist))


def _interruptible(run: Callable[[], int]) -> int:
    """``run()``, with SIGTERM treated as Ctrl-C: every ``finally`` and context manager runs,
    so everything the run started is stopped; exit status 130."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run()
    except KeyboardInterrupt:
        print("\nforkguard lab: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_and_report(plan: Plan, args: argparse.Namespace, arglist: list[str]) -> int:
    out_dir = ensure_dir(os.path.abspath(args.out))
    t_start = time.monotonic()
    facts = run_facts()
    progress = Progress(total=len(plan.cells) * plan.requests)
    try:
        results = _run_cells(plan, args, out_dir, progress)
    except ServerUnavailable as exc:
        print(f"forkguard lab: {exc}", file=sys.stderr)
        return 3
    finally:
        progress.close()
    meta = {**facts, **_meta(plan, args, arglist, time.monotonic() - t_start)}
    json_path = os.path.join(out_dir, "lab.json")
    txt_path = os.path.join(out_dir, "lab.txt")
    write_json(json_path, meta, results)
    chart = write_png(os.path.join(out_dir, "lab.png"), results)
    with open(txt_path, "w") as fh:
        fh.write(render(meta, results) + "\n")
    with open(json_path) as fh:
        doc = json.load(fh)
    _emit(doc, args, [txt_path, json_path] + ([chart] if chart else []))
    bad = [c for c in results if c.error or (c.strategy == "forkguard" and not c.clean)]
    return 1 if bad else 0
