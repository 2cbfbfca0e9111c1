"""``forkguard lab --app TARGET``: plan, preflight, cells, report, verdict.

Exit status (as for the matrix): 0 when every forkguard cell is clean, 1 when one is not or a
cell failed in the harness, 2 for bad input - bad arguments, an app that does not import, a
URL that answered 404 in every cell - and 3 when a server binary is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

from ..harness.commands import executable
from ..harness.servers import ServerUnavailable, missing_binaries_message
from ..labdocs import write_app_docs
from ..matrix import CellResult, Target
from ..options import UsageError, csv_list, targets_from_urls
from ..report import Progress, ensure_dir, render, write_json, write_png
from ..runners import SERVERS, WORKERS
from ..schedule import cell_workdir, database_targets, run_budgeted, run_facts
from . import APP_STRATEGIES
from .cell import AppRun, import_check, run_app_cell
from .settings import SettingsError, backends_named, parse_env, parse_urls
from .target import TargetError, parse_target

DEFAULT_REQUESTS = 300
DEFAULT_BUDGET = 300.0
# Options of the lab's own matrix that mean nothing for a user's app.
_MATRIX_ONLY = ("drivers", "quick", "readme", "from_json")


@dataclass(frozen=True)
class AppPlan:
    run: AppRun
    servers: list[str]
    strategies: list[str]
    requests: int
    budget: float
    given: dict[str, Target]

    @property
    def cells(self) -> list[tuple[str, str]]:
        return [(s, st) for s in self.servers for st in self.strategies]


def app_plan(args: argparse.Namespace) -> AppPlan:
    """The run the arguments ask for; UsageError / TargetError / SettingsError if they can't."""
    used = [f"--{name.replace('_', '-')}" for name in _MATRIX_ONLY if getattr(args, name)]
    if used:
        raise UsageError(f"{', '.join(used)}: not with --app (the lab's own app only)")
    if args.docs and not os.path.isdir(os.path.dirname(os.path.abspath(args.docs))):
        raise UsageError(f"--docs {args.docs}: no such directory")
    target = parse_target(args.app, args.chdir)
    if args.name:
        target = replace(target, name=args.name)
    env = parse_env(args.env)
    run = AppRun(target, parse_urls(args.url, args.urls), env, args.setup)
    servers = csv_list(args.servers, SERVERS, "servers") if args.servers else list(SERVERS)
    strategies = (
        csv_list(args.strategies, APP_STRATEGIES, "strategies")
        if args.strategies
        else list(APP_STRATEGIES)
    )
    requests = args.requests if args.requests is not None else DEFAULT_REQUESTS
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET
    if requests < 1 or args.max_requests < 1 or args.concurrency < 1 or budget <= 0:
        raise UsageError("--requests, --max-requests, --concurrency and --budget must be > 0")
    given = {b: t for b, t in targets_from_urls(args.db).items() if b in backends_named(env)}
    return AppPlan(run, servers, strategies, requests, budget, given)


def missing_servers(servers: list[str]) -> Optional[str]:
    """What to install when uWSGI or gunicorn is not there; None when both are."""
    missing = []
    for name in servers:
        try:
            executable(name)
        except RuntimeError:
            missing.append(name)
    if not missing:
        return None
    return (
        f"forkguard lab: {' and '.join(missing)} not found next to {sys.executable} or on "
        "PATH: pip install 'forkguard-lab' (it brings uWSGI and gunicorn)"
    )


def main(args: argparse.Namespace, arglist: list[str]) -> int:
    try:
        plan = app_plan(args)
    except (UsageError, TargetError, SettingsError) as exc:
        print(f"forkguard lab: {exc}", file=sys.stderr)
        return 2
    backends = backends_named(plan.run.env)
    problem = missing_servers(plan.servers) or missing_binaries_message(
        [b for b in backends if b not in plan.given]
    )
    if problem:
        print(problem, file=sys.stderr)
        return 3
    try:
        return _run(plan, args, arglist, backends)
    except ServerUnavailable as exc:
        print(f"forkguard lab: {exc}", file=sys.stderr)
        return 3


def _run(plan: AppPlan, args: argparse.Namespace, arglist: list[str], backends: list[str]) -> int:
    out_dir = ensure_dir(os.path.abspath(args.out))
    t_start = time.monotonic()
    facts = run_facts()
    progress = Progress(total=len(plan.cells) * plan.requests)
    with contextlib.ExitStack() as stack:
        stack.callback(progress.close)
        targets = database_targets(stack, backends, plan.given, progress)
        run = AppRun(plan.run.target, plan.run.ops, plan.run.env, plan.run.setup, targets)
        workdir = cell_workdir(stack, args.keep_logs, out_dir)
        progress.cell("importing the app once, as the master would")
        failed = import_check(run, workdir)
        if failed is not None:
            progress.close()
            print(f"forkguard lab: {failed}", file=sys.stderr)
            return 2

        def run_one(n: int, time_cap: float) -> CellResult:
            server, strategy = plan.cells[n]
            return run_app_cell(
                server,
                strategy,
                run,
                index=n,
                workdir=workdir,
                requests=plan.requests,
                max_requests=args.max_requests,
                concurrency=args.concurrency,
                time_cap=time_cap,
                progress=progress.advance,
            )

        labels = [f"{server} / {strategy}" for server, strategy in plan.cells]
        results = run_budgeted(labels, plan.budget, plan.requests, progress, run_one)
    meta = {**facts, **_meta(plan, args, arglist, time.monotonic() - t_start)}
    _write_outputs(out_dir, meta, results, as_json=args.json, page=args.docs)
    return verdict(results, list(plan.run.ops))


def verdict(results: list[CellResult], ops: list[str]) -> int:
    """2 if a URL answered only 404 in every cell (a wrong --url, not a broken app), 1 if a
    forkguard cell is not clean or a cell failed in the harness, else 0."""
    dead = [op for op in ops if _only_404(op, results)]
    if dead:
        print(
            f"forkguard lab: {', '.join(dead)} answered 404 in every cell: check --url",
            file=sys.stderr,
        )
        return 2
    bad = [c for c in results if c.error or (c.strategy == "forkguard" and not c.clean)]
    return 1 if bad else 0


def _only_404(op: str, results: list[CellResult]) -> bool:
    seen = [c.url_statuses.get(op, {}) for c in results if not c.error]
    return bool(seen) and all(set(statuses) == {"404"} for statuses in seen)


def _meta(
    plan: AppPlan, args: argparse.Namespace, arglist: list[str], elapsed: float
) -> dict[str, Any]:
    return {
        "command": ("forkguard lab " + " ".join(arglist)).strip(),
        "app": plan.run.target.label,
        "databases": backends_named(plan.run.env),
        "urls": list(plan.run.ops),
        "servers": plan.servers,
        "drivers": [plan.run.target.label],
        "strategies": plan.strategies,
        "requests_per_cell": plan.requests,
        "max_requests": args.max_requests,
        "concurrency": args.concurrency,
        "workers": WORKERS,
        "elapsed_s": round(elapsed, 1),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _write_outputs(
    out_dir: str,
    meta: dict[str, Any],
    results: list[CellResult],
    *,
    as_json: bool,
    page: Optional[str],
) -> None:
    """lab.txt, lab.json, lab.png, and this app's block in ``page`` (``--docs``)."""
    json_path = os.path.join(out_dir, "lab.json")
    txt_path = os.path.join(out_dir, "lab.txt")
    write_json(json_path, meta, results)
    chart = write_png(os.path.join(out_dir, "lab.png"), results)
    text = render(meta, results)
    with open(txt_path, "w") as fh:
        fh.write(text + "\n")
    with open(json_path) as fh:
        doc = json.load(fh)
    wrote = [txt_path, json_path] + ([chart] if chart else [])
    if page:
        wrote.append(write_app_docs(doc, page))
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(text)
        print(f"\nwrote {', '.join(wrote)}")
