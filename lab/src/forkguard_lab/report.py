"""Show the lab's results: a progress bar while it runs, then a table, a JSON file and a PNG.

The table is the artefact people read (and paste into the README), so it fits in 120 columns
and puts the four symptoms first: HTTP errors, DB errors, wrong answers (another process's
data) and lost writes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Optional, TextIO

from . import STRATEGIES
from .legend import legend as _legend
from .matrix import CellResult

log = logging.getLogger("forkguard_lab")


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = ""
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0

    def cell(self, label: str) -> None:
        self.label = label
        if not self.tty:
            print(f"[{time.monotonic() - self.t0:5.0f}s] {label}", file=self.stream, flush=True)
        self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw()

    def set_done(self, done: int) -> None:
        self.done = min(self.total, max(self.done, done))
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = self.done / self.total
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"\r[{bar}] {frac:4.0%} {now - self.t0:5.0f}s  {self.label}"
        self.stream.write(line[:119].ljust(119))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 119 + "\r")
            self.stream.flush()


def _reqs(cell: CellResult) -> str:
    return f"{cell.requests}*" if cell.time_capped else str(cell.requests)


def _pss(cell: CellResult) -> str:
    if cell.error:
        return "-"
    if cell.pss_not_measured or not cell.workers_pss_kb:
        return "n/m"
    return f"{cell.workers_pss_kb / 1024:.0f}"


def _respawn(cell: CellResult) -> str:
    if cell.respawn_s is not None:
        return f"{cell.respawn_s:.2f}s"
    return {"errors": "errors", "timeout": "never"}.get(cell.respawn_status, "-")


def _kinds(cell: CellResult, limit: int = 3) -> str:
    if cell.error:
        return f"HARNESS ERROR: {cell.error}"[:60]
    items = sorted(cell.db_error_kinds.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} x{n}" for k, n in items)


def _checked(cell: CellResult, value: str) -> str:
    return value if cell.checks_answers else "-"


def _is_app_run(cells: list[CellResult]) -> bool:
    """Cells of ``forkguard lab --app`` (a user's app, whose answers are not checked)."""
    return bool(cells) and not any(c.checks_answers for c in cells)


def format_table(cells: list[CellResult]) -> str:
    """The results as a fixed-width text table (also valid inside a Markdown code block)."""
    head = (
        "server",
        "app" if _is_app_run(cells) else "driver",
        "strategy",
        "reqs",
        "HTTP err",
        "DB err",
        "wrong ans",
        "lost wr",
        "req/s",
        "PSS MB",
        "respawn",
        "DB error kinds (top 3)",
    )
    rows: list[tuple[str, ...]] = []
    for c in cells:
        rows.append(
            (
                c.server,
                c.driver,
                c.strategy,
                _reqs(c),
                str(c.http_errors),
                str(c.db_errors),
                _checked(c, str(c.leaks)),
                _checked(
                    c,
                    str(c.lost_writes)
                    + (f"+{c.failed_but_committed}" if c.failed_but_committed else ""),
                ),
                f"{c.throughput_rps:.0f}",
                _pss(c),
                _respawn(c),
                _kinds(c) or ("clean" if c.clean else ""),
            )
        )
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    numeric = {3, 4, 5, 6, 7, 8, 9, 10}

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(widths[i]) if i in numeric else v.ljust(widths[i]) for i, v in enumerate(r)
        ).rstrip()

    out = [fmt(head), "  ".join("-" * w for w in widths)]
    prev: Optional[tuple[str, str]] = None
    for c, r in zip(cells, rows):
        if prev is not None and prev != (c.server, c.driver):
            out.append("")
        prev = (c.server, c.driver)
        out.append(fmt(r))
    return "\n".join(out)


def legend(cells: Optional[list[CellResult]] = None, style: str = "fsa2") -> str:
    """Every column, the app style, the strategies and the error kinds these cells show."""
    shown = cells or []
    kinds = {k for c in shown for k in c.db_error_kinds}
    return _legend(kinds, style, harness_error=any(c.error for c in shown), app=_is_app_run(shown))


def notes(cells: list[CellResult]) -> str:
    """One line per mark in the table (a cell cut short by its time cap, a PSS not measured)
    and per cell that is not clean only because its respawn test logged DB errors, which no
    column counts."""
    lines = []
    for c in cells:
        where = f"{c.server}/{c.driver}/{c.strategy}"
        if c.time_capped and not c.error:
            dropped = f"; {c.cut_off} still unanswered 3 s later were dropped" if c.cut_off else ""
            lines.append(
                f"* {where}: {c.requests} of {c.requests_asked} requests, stopped at its "
                f"{c.time_cap_s:.1f} s time cap{dropped}"
            )
        if c.pss_not_measured and not c.error:
            lines.append(f"n/m {where}: PSS not measured: {c.pss_not_measured}")
        if c.respawn_db_errors and not (c.http_errors or c.db_errors or c.error):
            lines.append(
                f"respawn {where}: {c.respawn_db_errors} DB errors logged after a worker was "
                "killed for the respawn column (not in 'DB err')"
            )
    return "\n".join(lines)


def render(meta: dict[str, Any], cells: list[CellResult]) -> str:
    """The whole text output of a run (what ``forkguard lab`` prints and docs/lab.md shows)."""
    n_strategies = len(meta["strategies"])
    what = (
        f"forkguard lab --app {meta['app']}: {len(meta['servers'])} server(s) x "
        if meta.get("app")
        else f"forkguard lab ({'quick subset' if meta.get('quick') else 'matrix'}): "
        f"{len(meta['servers'])} server(s) x {len(meta['drivers'])} driver(s) x "
    )
    head = (
        what + f"{n_strategies} strateg{'y' if n_strategies == 1 else 'ies'}, "
        f"{meta.get('workers', 4)} workers, max-requests {meta['max_requests']}, "
        f"{meta['requests_per_cell']} requests/cell, {meta['elapsed_s']:.0f}s, "
        f"commit {meta.get('commit', 'unknown')}"
    )
    parts = [head, CLIENTS_NOTE if meta.get("clients") else "", format_table(cells)]
    parts += [notes(cells), summary(cells), legend(cells, meta.get("style", "fsa2"))]
    return "\n\n".join(p for p in parts if p)


CLIENTS_NOTE = (
    "--clients: the app also builds a requests.Session at import, calls a private HTTPS API "
    "(keep-alive) there, and again in every /echo request; a failed or crossed call fails the "
    "request (HTTP err) and its exception is one of the error kinds."
)


def pss_ratios(cells: list[CellResult]) -> list[tuple[str, str, float]]:
    """(server, driver, forkguard PSS / lazy PSS) wherever both cells have a measured PSS."""
    return [(s, d, r) for s, d, r in _pss_pairs(cells) if isinstance(r, float)]


def _pss_pairs(cells: list[CellResult]) -> list[tuple[str, str, object]]:
    """(server, driver, ratio or the reason there is none) for each forkguard/lazy pair."""
    by_key = {(c.server, c.driver, c.strategy): c for c in cells}
    out: list[tuple[str, str, object]] = []
    for (server, driver, strategy), ours in by_key.items():
        lazy = by_key.get((server, driver, "lazy"))
        if strategy != "forkguard" or lazy is None:
            continue
        missing = [c for c in (ours, lazy) if not c.workers_pss_kb]
        if missing:
            why = "; ".join(
                f"{c.strategy} PSS not measured ({c.pss_not_measured or c.error or 'no reading'})"
                for c in missing
            )
            out.append((server, driver, why))
        else:
            out.append((server, driver, ours.workers_pss_kb / lazy.workers_pss_kb))
    return out


def summary(cells: list[CellResult]) -> str:
    """The verdict lines under the table: the lab's three claims, checked on these cells.

    forkguard cells are clean; ``none`` and the user's first fix (``dispose``) show the reported
    bug; forkguard's workers need less memory than lazy loading's. Cells cut short by their time
    cap are counted here too, so a short row is never unexplained.
    """
    lines = []
    app = _is_app_run(cells)
    fg = [c for c in cells if c.strategy == "forkguard"]
    if fg:
        clean = sum(c.clean for c in fg)
        what = "0 HTTP/DB errors" if app else "0 HTTP/DB errors, 0 wrong answers, 0 lost writes"
        lines.append(f"forkguard: {clean}/{len(fg)} cells clean ({what})")
    for strategy in ("none", "dispose"):
        group = [c for c in cells if c.strategy == strategy]
        if group:
            broken = sum(not c.clean for c in group)
            why = "preloaded, no fix" if app else "the reported bug"
            lines.append(f"{strategy}: {broken}/{len(group)} cells show errors ({why})")
    capped = [c for c in cells if c.time_capped and not c.error]
    if capped:
        lines.append(
            f"time cap: {len(capped)}/{len(cells)} cells stopped at their time cap before the "
            "requested count (reqs marked *); a larger --budget lets them finish"
        )
    for server, driver, ratio in _pss_pairs(cells):
        other = "lazy-apps" if server == "uwsgi" else "no --preload"
        if isinstance(ratio, float):
            lines.append(
                f"memory {server}/{driver}: forkguard workers use {ratio:.2f}x the PSS of {other}"
            )
        else:
            lines.append(f"memory {server}/{driver}: not compared: {ratio}")
    return "\n".join(lines)


def write_json(path: str, meta: dict[str, Any], cells: list[CellResult]) -> None:
    doc = {
        "meta": meta,
        "cells": [c.as_dict() for c in cells],
        "pss_ratio_forkguard_vs_lazy": [
            {"server": s, "driver": d, "ratio": round(r, 3)}
            if isinstance(r, float)
            else {"server": s, "driver": d, "ratio": None, "not_compared": r}
            for s, d, r in _pss_pairs(cells)
        ],
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=False)
        fh.write("\n")


_CHART_LABELS = {
    "none": "none",
    "dispose": "user's 1st fix:\ndispose()",
    "close-all-and-dispose": "user's 2nd fix:\nclose_all+dispose\n+new session",
    "dispose-noclose": "SQLAlchemy docs:\ndispose(close=False)",
    "lazy": "lazy-apps /\nno --preload",
    "forkguard": "forkguard\n.install()",
}


def write_png(path: str, cells: list[CellResult], title: str = "") -> Optional[str]:
    """Errors and worker memory by strategy; None if matplotlib is missing.

    Summed per strategy (over servers and drivers) so the full matrix stays readable; the
    per-cell numbers are in the table and the JSON.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        log.warning("no chart: matplotlib is not installed (%s)", exc)
        return None
    strategies = [s for s in STRATEGIES if any(c.strategy == s for c in cells)]
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(max(8.0, 1.6 * len(strategies) + 2), 8.5), constrained_layout=True
    )
    _draw_symptoms(ax1, cells, strategies, title)
    _draw_memory(ax2, cells, strategies)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_symptoms(ax: Any, cells: list[CellResult], strategies: list[str], title: str) -> None:
    """Top chart: every symptom summed per strategy, on a symlog scale (0 is the only good
    answer, and a clean strategy says so in words rather than with empty space)."""
    xs = list(range(len(strategies)))

    def total(strategy: str, attr: str) -> int:
        return sum(int(getattr(c, attr)) for c in cells if c.strategy == strategy)

    series = (
        ("HTTP errors", "http_errors", "#d62728"),
        ("DB errors", "db_errors", "#ff7f0e"),
        ("wrong answers", "leaks", "#9467bd"),
        ("lost writes", "lost_writes", "#8c564b"),
    )
    width = 0.8 / len(series)
    for k, (name, attr, color) in enumerate(series):
        offs = (k - (len(series) - 1) / 2) * width
        ax.bar(
            [x + offs for x in xs],
            [total(s, attr) for s in strategies],
            width,
            label=name,
            color=color,
        )
    for x, strategy in zip(xs, strategies):
        group = [c for c in cells if c.strategy == strategy]
        if all(c.clean for c in group):
            ax.text(
                x,
                0.5,
                f"0 errors\n({len(group)} cells)",
                ha="center",
                va="bottom",
                fontsize=9,
                color="#2ca02c",
                fontweight="bold",
            )
    ax.set_yscale("symlog", linthresh=1)
    peak = max([total(s, attr) for s in strategies for _, attr, _ in series] + [0])
    ax.set_ylim(0, max(10, peak * 3))  # explicit: an all-zero chart has no data limits
    ax.set_ylabel("count, all cells (symlog)")
    ax.set_xticks(xs)
    ax.set_xticklabels([_tick_label(s, cells) for s in strategies], fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "forkguard lab: symptoms by strategy (0 is the only good answer)")


def _draw_memory(ax: Any, cells: list[CellResult], strategies: list[str]) -> None:
    """Bottom chart: the workers' total PSS per strategy and server, mean over drivers; a
    strategy with no measured cell says "not measured" instead of drawing a zero."""
    servers = sorted({c.server for c in cells}, key=lambda s: (s != "uwsgi", s))
    xs = list(range(len(strategies)))
    bw = 0.8 / max(1, len(servers))
    for k, server in enumerate(servers):
        means = []
        for strategy in strategies:
            vals = [
                c.workers_pss_kb / 1024
                for c in cells
                if c.strategy == strategy and c.server == server and c.workers_pss_kb
            ]
            means.append(sum(vals) / len(vals) if vals else 0.0)
        offs = (k - (len(servers) - 1) / 2) * bw
        ax.bar([x + offs for x in xs], means, bw, label=server)
        for x, mean in zip(xs, means):
            if not mean:
                ax.text(x + offs, 0, "not\nmeasured", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels([_CHART_LABELS.get(s, s) for s in strategies], fontsize=8)
    ax.set_ylabel("total PSS of 4 workers (MB)")
    ax.set_title(
        "worker memory once every worker had loaded the app, mean over drivers (lower is better)"
    )
    ax.legend(fontsize=8)


def _tick_label(strategy: str, cells: list[CellResult]) -> str:
    """The strategy's chart label, plus how many of its cells the time cap cut short."""
    group = [c for c in cells if c.strategy == strategy]
    capped = sum(c.time_capped for c in group)
    label = _CHART_LABELS.get(strategy, strategy)
    return f"{label}\n({capped}/{len(group)} cut short\nby the time cap)" if capped else label


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
