"""The cells of one run, in turn, each load capped to its share of what is left of the budget,
against database servers the run starts (private, throwaway) or the user gives (``--db``).

Shared by the lab's matrix (:mod:`.cli`) and ``--app`` runs (:mod:`.userapp.run`): a cell
is whatever ``run_one(index, time_cap)`` measures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable

from .harness.pooler import private_pgbouncer
from .harness.provenance import checkout_commit
from .harness.servers import private_server
from .matrix import CellResult, Target
from .report import Progress, ensure_dir

# Seconds a cell spends outside the load (start, settle, respawn, stop) on a loaded machine;
# the budget then corrects itself: later cells get what earlier ones left.
CELL_OVERHEAD = 5.0
MAX_CELL_LOAD_S = 30.0


def database_targets(
    stack: contextlib.ExitStack,
    backends: Sequence[str],
    given: dict[str, Target],
    progress: Progress,
) -> dict[str, Target]:
    """A :class:`Target` per backend: the given one, else a private server that ``stack``
    stops and deletes."""
    targets = {b: given[b] for b in backends if b in given}
    for backend in (b for b in backends if b not in given):
        progress.cell(f"starting a private {backend} server")
        srv = stack.enter_context(private_server(backend))
        targets[backend] = Target(
            kind=backend, host="127.0.0.1", port=srv.port, user=srv.admin_user
        )
    return targets


def pooled_targets(
    stack: contextlib.ExitStack, upstream: Target, modes: Sequence[str], progress: Progress
) -> dict[str, Target]:
    """A :class:`Target` per PgBouncer pool mode: a private PgBouncer in front of ``upstream``
    (stopped by ``stack``), which the app reaches while the lab's statements go upstream."""
    out: dict[str, Target] = {}
    for mode in modes:
        progress.cell(f"starting a private PgBouncer ({mode} pooling)")
        pgb = stack.enter_context(private_pgbouncer(upstream.port, pool_mode=mode,
                                                    admin_users=(upstream.user,)))  # fmt: skip
        out[mode] = dataclasses.replace(upstream, app_port=pgb.port)
    return out


def run_budgeted(
    labels: Sequence[str],
    budget: float,
    requests: int,
    progress: Progress,
    run_one: Callable[[int, float], CellResult],
) -> list[CellResult]:
    """``run_one(n, time_cap)`` for each cell, the cap being the cell's share of what is left
    of ``budget`` minus the overhead the cells so far spent outside their load."""
    t_start = time.monotonic()
    results: list[CellResult] = []
    overheads: list[float] = []
    for n, label in enumerate(labels):
        share = (budget - (time.monotonic() - t_start)) / (len(labels) - n)
        overhead = sum(overheads) / len(overheads) if overheads else CELL_OVERHEAD
        progress.cell(f"cell {n + 1}/{len(labels)}: {label}")
        done_before = progress.done
        res = run_one(n, round(max(2.0, min(MAX_CELL_LOAD_S, share - overhead)), 1))
        progress.set_done(done_before + requests)
        results.append(res)
        overheads.append(max(0.0, res.cell_seconds - res.load_seconds))
    return results


def cell_workdir(stack: contextlib.ExitStack, keep_logs: bool, out_dir: str) -> str:
    """Where cells write their server logs: OUT/logs with ``--keep-logs``, else a temporary
    directory that ``stack`` deletes."""
    if keep_logs:
        return ensure_dir(os.path.join(out_dir, "logs"))
    return stack.enter_context(tempfile.TemporaryDirectory(prefix="fg-lab-"))


def run_facts() -> dict[str, Any]:
    """Taken before the first cell: the code and the machine as the run found them."""
    return {
        "commit": checkout_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
