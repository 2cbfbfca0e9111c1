"""The issue's targets, each with this run's measured value and whether it is met.

A target whose figure is missing reads ``n/a``; rows marked ``reported`` carry a figure the
issue asks to see beside a target (the first load, the server's own respawn cycle) but set no
bound on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .figures import (
    SAME_APP,
    checkout_split,
    dispose_cells,
    dispose_rows,
    fmt,
    orm_case,
    pool_entries,
    prefork_ratios,
)
from .orm import TARGET_CASE
from .terms import FLOOR, NOT_MEASURED, VARIANT_LABELS

HOT_TARGET = 1.02
ORM_TARGET = 1.02
CLIENT_RPS_TARGET = 0.98
BARE_TARGET_NS = 1000.0
OWN_NS_TARGET = 300.0
OWN_INSTRUCTIONS_TARGET = 500.0
PSS_TARGET = 0.5
DISPOSE_PSS_TARGET = 1.02
DISPOSE_PRIVATE_MB_TARGET = 1.0
RESPAWN_AFTER_FORK_TARGET = 0.1
THROUGHPUT_TARGET = 0.97
CPU_PER_REQUEST_TARGET = 1.0
POOLED_RUNS_WANTED = 3
FREEZE_GC_TARGET = 0.6
FREEZE_THROUGHPUT_TARGET = 0.95

nan = float("nan")

TARGET_HEADER = ("target", "wanted", "measured: median (Q1-Q3 of the paired rounds)", "")


@dataclass
class Targets:
    out: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        name: str,
        wanted: str,
        value: float,
        met: bool,
        spec: str = "{:.3f}",
        spread: Optional[tuple[float, float]] = None,
        note: str = "",
        extra: str = "",
    ) -> None:
        measured = fmt(value, spec)
        if spread is not None and not math.isnan(value):
            measured += f" ({fmt(spread[0], spec)}-{fmt(spread[1], spec)})"
        if extra and not math.isnan(value):
            measured += f"; {extra}"
        self.out.append(
            {
                "target": name,
                "wanted": wanted,
                "measured": measured,
                "met": None if math.isnan(value) else met,
                "note": note,
            }
        )

    def report(self, name: str, measured: str) -> None:
        """A figure shown beside a target, with no bound of its own."""
        self.out.append(
            {"target": name, "wanted": "reported", "measured": measured, "met": None, "note": ""}
        )


def _hot(t: Targets, doc: dict[str, Any]) -> None:
    hot = doc.get("hotpath", {})
    for backend, q in hot.get("query", {}).items():
        r = q["ratio_forkguard"]
        t.add(
            f"hot path guarded/unguarded, {backend}",
            f"<= {HOT_TARGET}",
            r["median"],
            r["median"] <= HOT_TARGET,
            spread=(r["q1"], r["q3"]),
        )
    for backend, b in hot.get("bare", {}).items():
        ns = b["added_ns"]
        t.add(
            f"bare checkout+checkin: ns added, {backend}",
            f"<= {BARE_TARGET_NS:.0f} ns",
            ns["median"],
            ns["median"] <= BARE_TARGET_NS,
            "{:.0f}",
            spread=(ns["q1"], ns["q3"]),
        )
        floor, own = checkout_split(doc, backend)
        t.add(
            f"bare checkout: forkguard's own CPU ns over the floor, {backend}",
            f"<= {OWN_NS_TARGET:.0f} ns",
            own,
            own <= OWN_NS_TARGET,
            "{:+.0f}",
            extra=f"floor ({FLOOR}) {fmt(floor, '{:+.0f}')}",
        )
    ins = doc.get("instructions", {})
    if "split" in ins:
        own, floor = ins["split"]["forkguard_own"], ins["split"]["checkout_dispatch"]
        lo, hi = ins.get("split_range", {}).get("forkguard_own", [own, own])
        repeats = int(ins.get("repeats", 1))
        spread = f"; range over {repeats} repeats {fmt(lo, '{:+,.0f}')} to {fmt(hi, '{:+,.0f}')}"
        t.add(
            f"bare checkout: forkguard's own instructions over the floor, {ins['backend']}",
            f"<= {OWN_INSTRUCTIONS_TARGET:.0f}",
            own,
            own <= OWN_INSTRUCTIONS_TARGET,
            "{:+,.0f}",
            extra=f"floor {fmt(floor, '{:+,.0f}')}" + (spread if repeats > 1 else ""),
        )


def _orm(t: Targets, doc: dict[str, Any]) -> None:
    case = orm_case(doc, TARGET_CASE)
    if case is None:
        return
    r = case["ratio"]["forkguard"]
    floor = case["ratio"]["noop-orm"]["median"]
    t.add(
        "ORM Session.execute(), forkguard / unguarded, sqlite in-process CPU",
        f"<= {ORM_TARGET}",
        r["median"],
        r["median"] <= ORM_TARGET,
        spread=(r["q1"], r["q3"]),
        extra=f"floor (any do_orm_execute listener) {fmt(floor, '{:.3f}')}",
    )


def _clients(t: Targets, doc: dict[str, Any]) -> None:
    res = doc.get("clients")
    if not res or "rps_ratio" not in res:
        return
    r = res["rps_ratio"]
    t.add(
        "HTTP client: requests per second through a keep-alive requests.Session, "
        "forkguard / unguarded",
        f">= {CLIENT_RPS_TARGET}",
        r["median"],
        r["median"] >= CLIENT_RPS_TARGET,
        spread=(r["q1"], r["q3"]),
    )


def _runs_note(doc: dict[str, Any], runs: int) -> str:
    if doc.get("quick") or runs >= POOLED_RUNS_WANTED:
        return ""
    return f"{runs} run pooled of the {POOLED_RUNS_WANTED} the target asks for"


def _throughput(
    t: Targets, doc: dict[str, Any], row: dict[str, Any], tag: str, bound: float
) -> None:
    # Steady state: the first load also carries preloading's copy-on-write first touches, a
    # cost lazy-apps workers paid while importing, before "ready": reported beside, no bound.
    runs = row["warm_throughput_runs"]
    unsettled = " (copy-on-write had not settled)" if row["settled"] is False else ""
    per_run = " / ".join(fmt(x, "{:.3f}") for x in row["warm_throughput_per_run"])
    t.add(
        f"throughput (warm) / lazy, pooled median of {runs} run(s), {tag}{unsettled}",
        f">= {bound}",
        row["warm_throughput"],
        row["warm_throughput"] >= bound,
        spread=(row["warm_throughput_q1"], row["warm_throughput_q3"]),
        note=_runs_note(doc, runs),
        extra=f"per run: {per_run}" if runs > 1 else "",
    )
    t.report(
        f"throughput (first load, before copy-on-write settles) / lazy, {tag}",
        f"{fmt(row['throughput'], '{:.3f}')} "
        f"({fmt(row['throughput_q1'], '{:.3f}')}-{fmt(row['throughput_q3'], '{:.3f}')})",
    )
    t.add(
        f"worker CPU / request (warm) / lazy, {runs} run(s), {tag}",
        f"<= {CPU_PER_REQUEST_TARGET}",
        row["warm_cpu_per_request"],
        row["warm_cpu_per_request"] <= CPU_PER_REQUEST_TARGET,
        note=_runs_note(doc, runs),
    )


def _respawn(t: Targets, row: dict[str, Any], tag: str) -> None:
    (fork_p, _), (fork_l, _) = row["respawn_parts"]
    t.report(
        f"respawn: kill -> fork (the server's master cycle, any variant), {tag}",
        f"{fmt(fork_p)} s preloaded / {fmt(fork_l)} s lazy; kill -> serving "
        f"{fmt(row['respawn'], '{:.3f}')}x lazy",
    )
    t.add(
        f"respawn: fork -> serving / lazy, {tag}",
        f"<= {RESPAWN_AFTER_FORK_TARGET}",
        row["respawn_after_fork"],
        row["respawn_after_fork"] <= RESPAWN_AFTER_FORK_TARGET,
    )


def _prefork(t: Targets, doc: dict[str, Any]) -> None:
    smallest = min((r["workers"] for r in prefork_ratios(doc)), default=0)
    for row in prefork_ratios(doc):
        tag = f"{row['server']} x{row['workers']}, {VARIANT_LABELS[row['variant']]}"
        first = row["workers"] == smallest
        if first and row["variant"] == "forkguard":
            t.add(
                f"total PSS at ready / lazy, {tag}",
                f"<= {PSS_TARGET}",
                row["pss_ready"],
                row["pss_ready"] <= PSS_TARGET,
            )
        if row["variant"] == "forkguard":
            _respawn(t, row, tag)
            _throughput(t, doc, row, tag, THROUGHPUT_TARGET)
        if first and row["variant"] == "forkguard-freeze":
            t.add(
                f"total PSS after load + full GC / lazy, {tag}",
                f"<= {FREEZE_GC_TARGET}",
                row["pss_gc"],
                row["pss_gc"] <= FREEZE_GC_TARGET,
            )
            _throughput(t, doc, row, tag, FREEZE_THROUGHPUT_TARGET)


def _dispose_row(doc: dict[str, Any], server: str, workers: int, variant: str) -> Any:
    for row in dispose_rows(doc):
        if (row["server"], row["workers"], row["variant"], row["phase"]) == (
            server,
            workers,
            variant,
            "ready",
        ):
            return row
    return None


def _dispose(t: Targets, doc: dict[str, Any]) -> None:
    """18.2 on the like-for-like pair - forkguard on the app the recipe needs (import-time
    session closed) - and, reported beside it, forkguard on the reported app unchanged."""
    for server, workers in dispose_cells(doc):
        tag = f"{server} x{workers}, at ready"
        same = _dispose_row(doc, server, workers, SAME_APP)
        note = "" if same is not None else f"forkguard on the recipe's app {NOT_MEASURED}"
        t.add(
            f"total PSS, forkguard / dispose(close=False) hook, same app, {tag}",
            f"<= {DISPOSE_PSS_TARGET}",
            same["pss_vs_dispose"] if same else nan,
            bool(same) and same["pss_vs_dispose"] <= DISPOSE_PSS_TARGET,
            note=note,
            extra=f"forkguard / lazy {fmt(same['pss_vs_lazy'], '{:.3f}')}" if same else "",
        )
        t.add(
            f"private MB per worker, forkguard - dispose(close=False) hook, same app, {tag}",
            f"<= {DISPOSE_PRIVATE_MB_TARGET} MB",
            same["private_mb_delta"] if same else nan,
            bool(same) and same["private_mb_delta"] <= DISPOSE_PRIVATE_MB_TARGET,
            "{:+.2f}",
            note=note,
            extra=f"{fmt(same['private_mb'][0], '{:.1f}')} MB vs "
            f"{fmt(same['private_mb'][1], '{:.1f}')} MB"
            if same
            else "",
        )
        reported = _dispose_row(doc, server, workers, "forkguard")
        if reported is not None:
            t.report(
                f"forkguard on the reported app (unchanged) vs dispose(close=False) on the "
                f"recipe's, {tag}",
                f"total PSS {fmt(reported['pss_vs_dispose'], '{:.3f}')}; private MB per worker "
                f"{fmt(reported['private_mb_delta'], '{:+.2f}')}",
            )


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each issue target with the measured value and whether it is met."""
    t = Targets()
    _hot(t, doc)
    _orm(t, doc)
    _clients(t, doc)
    _prefork(t, doc)
    _dispose(t, doc)
    return t.out


def pooled_runs(doc: dict[str, Any]) -> int:
    return len(pool_entries(doc))


def target_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in targets(doc):
        if t["wanted"] == "reported":
            status = "reported"
        else:
            status = {True: "met", False: "**missed**", None: "n/a"}[t["met"]]
        if t["note"]:
            status += f" ({t['note']})"
        rows.append([t["target"], t["wanted"], t["measured"], status])
    return rows
