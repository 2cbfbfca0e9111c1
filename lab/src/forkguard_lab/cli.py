"""``forkguard lab``: run the matrix and report it.

Exit status: 0 when every forkguard cell is clean, 1 when one is not (or a cell failed in the
harness), 2 for bad arguments, 3 when database server binaries are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Optional, Sequence

from . import DRIVERS, STRATEGIES
from .harness.servers import ServerUnavailable, missing_binaries_message, private_server
from .matrix import CellResult, Target, run_cell
from .report import (
    Progress,
    ensure_dir,
    format_table,
    legend,
    summary,
    write_json,
    write_png,
)
from .runners import SERVERS

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
    budget=70.0,
)
FULL = Preset(
    servers=SERVERS,
    drivers=tuple(DRIVERS),
    strategies=STRATEGIES,
    requests=400,
    budget=420.0,
)
# Seconds a cell spends outside the load (start, settle, respawn, stop) on a loaded machine;
# the budget then corrects itself: later cells get what earlier ones left.
_CELL_OVERHEAD = 5.0


class UsageError(Exception):
    pass


def _csv(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError(f"--{what}: empty list")
    bad = [v for v in items if v not in allowed]
    if bad:
        raise UsageError(f"--{what}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


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
    p.add_argument(
        "--quick",
        action="store_true",
        help="a subset that finishes in under 2 minutes: uwsgi+gunicorn x pymysql x "
        "none, dispose, lazy, forkguard",
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
        help="seconds for the whole run; each cell's load is capped to its share "
        "(default 420; quick 70)",
    )
    p.add_argument(
        "--style",
        choices=("fsa2", "fsa3"),
        default="fsa2",
        help="fsa2 (default, as in the bug report: app context pushed at import, session "
        "holds its connection) or fsa3 (with app.app_context(): connection pooled)",
    )
    p.add_argument("--out", default="lab-results", help="output directory (default ./lab-results)")
    p.add_argument(
        "--json", action="store_true", help="print the JSON document on stdout instead of the table"
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep each cell's server log under OUT/logs"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the harness's steps")
    return p


def _targets_from_urls(urls: Sequence[str]) -> dict[str, Target]:
    from sqlalchemy.engine import make_url

    out: dict[str, Target] = {}
    for raw in urls:
        try:
            url = make_url(raw)
        except Exception as exc:
            raise UsageError(f"--db {raw!r}: not a database URL ({exc})") from exc
        backend = url.get_backend_name()
        if backend in ("mariadb",):
            backend = "mysql"
        if backend not in ("mysql", "postgresql"):
            raise UsageError(f"--db {raw!r}: only mysql:// and postgresql:// URLs are supported")
        if url.host not in (None, "127.0.0.1", "localhost", "::1"):
            raise UsageError(f"--db {raw!r}: the lab only talks to servers on 127.0.0.1")
        if backend in out:
            raise UsageError(f"--db: two URLs for {backend}")
        out[backend] = Target(
            kind=backend,
            host="127.0.0.1",
            port=url.port or (3306 if backend == "mysql" else 5432),
            user=url.username or ("root" if backend == "mysql" else "postgres"),
            password=url.password if isinstance(url.password, str) else None,
            private=False,
        )
    return out


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    base = QUICK if args.quick else FULL
    try:
        servers = _csv(args.servers, SERVERS, "servers") if args.servers else list(base.servers)
        drivers = (
            _csv(args.drivers, list(DRIVERS), "drivers") if args.drivers else list(base.drivers)
        )
        strategies = (
            _csv(args.strategies, STRATEGIES, "strategies")
            if args.strategies
            else list(base.strategies)
        )
        requests = args.requests if args.requests is not None else base.requests
        budget = args.budget if args.budget is not None else base.budget
        if requests < 1 or args.max_requests < 1 or args.concurrency < 1 or budget <= 0:
            raise UsageError("--requests, --max-requests, --concurrency and --budget must be > 0")
        given = _targets_from_urls(args.db)
    except UsageError as exc:
        print(f"forkguard lab: {exc}", file=sys.stderr)
        return 2

    backends = sorted({DRIVERS[d][0] for d in drivers})
    need_private = [b for b in backends if b not in given]
    missing = missing_binaries_message(need_private)
    if missing:
        print(missing, file=sys.stderr)
        return 3

    cells_plan = [(s, d, st) for s in servers for d in drivers for st in strategies]
    out_dir = ensure_dir(os.path.abspath(args.out))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    t_start = time.monotonic()
    results: list[CellResult] = []
    overheads: list[float] = []  # seconds each cell spent outside its load: start, stop, ...
    progress = Progress(total=len(cells_plan) * requests)
    try:
        with contextlib.ExitStack() as stack:
            targets = dict(given)
            for backend in need_private:
                progress.cell(f"starting a private {backend} server")
                srv = stack.enter_context(private_server(backend))
                targets[backend] = Target(
                    kind=backend, host="127.0.0.1", port=srv.port, user=srv.admin_user
                )
            if args.keep_logs:
                workdir = ensure_dir(os.path.join(out_dir, "logs"))
            else:
                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="fg-lab-"))
            for n, (server, driver, strategy) in enumerate(cells_plan):
                left = len(cells_plan) - n
                share = (budget - (time.monotonic() - t_start)) / left
                respawn_timeout = 5.0
                overhead = sum(overheads) / len(overheads) if overheads else _CELL_OVERHEAD
                time_cap = max(2.0, min(30.0, share - overhead))
                progress.cell(f"cell {n + 1}/{len(cells_plan)}: {server} / {driver} / {strategy}")
                done_before = progress.done
                res = run_cell(
                    server,
                    driver,
                    strategy,
                    targets[DRIVERS[driver][0]],
                    index=n,
                    workdir=workdir,
                    requests=requests,
                    max_requests=args.max_requests,
                    concurrency=args.concurrency,
                    time_cap=time_cap,
                    style=args.style,
                    respawn_timeout=respawn_timeout,
                    progress=progress.advance,
                )
                progress.set_done(done_before + requests)
                results.append(res)
                overheads.append(max(0.0, res.cell_seconds - res.load_seconds))
    except ServerUnavailable as exc:
        progress.close()
        print(f"forkguard lab: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        progress.close()
        print("forkguard lab: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    elapsed = time.monotonic() - t_start

    command = "forkguard lab " + " ".join(list(argv) if argv is not None else sys.argv[1:])
    meta: dict[str, Any] = {
        "command": command.strip(),
        "quick": bool(args.quick),
        "servers": servers,
        "drivers": drivers,
        "strategies": strategies,
        "requests_per_cell": requests,
        "max_requests": args.max_requests,
        "concurrency": args.concurrency,
        "style": args.style,
        "workers": 4,
        "elapsed_s": round(elapsed, 1),
        "databases": {b: ("given" if b in given else "private") for b in backends},
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    json_path = os.path.join(out_dir, "lab.json")
    png_path = os.path.join(out_dir, "lab.png")
    txt_path = os.path.join(out_dir, "lab.txt")
    write_json(json_path, meta, results)
    chart = write_png(png_path, results)
    scope = "quick subset" if args.quick else "matrix"
    text = "\n".join(
        [
            f"forkguard lab ({scope}): {len(servers)} server(s) x {len(drivers)} driver(s) x "
            f"{len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'}, 4 workers, "
            f"max-requests {args.max_requests}, {requests} requests/cell, {elapsed:.0f}s",
            "",
            format_table(results),
            "",
            summary(results),
            "",
            legend(),
        ]
    )
    with open(txt_path, "w") as fh:
        fh.write(text + "\n")
    if args.json:
        with open(json_path) as fh:
            sys.stdout.write(fh.read())
    else:
        print(text)
        print(f"\nwrote {txt_path}, {json_path}" + (f", {chart}" if chart else ""))
    bad = [c for c in results if c.error or (c.strategy == "forkguard" and not c.clean)]
    return 1 if bad else 0
