"""Figures derived from ``results.json``: ratios, pooled medians, splits. No prose here.

Everything the report prints or the docs say is computed by these functions from the JSON
alone, so a page regenerated from a stored run reads the same as the one the run wrote.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from .prefork import VARIANTS
from .timing import median, paired_ratios, quartiles

nan = float("nan")
PHASES = ("ready", "load", "gc", "warm")
Run = dict[str, Any]


# ---- formatting ----------------------------------------------------------------------------


def fmt(x: Optional[float], spec: str = "{:.2f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else spec.format(x)


def mb(kb: float) -> str:
    return fmt(kb / 1024.0, "{:.0f}")


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


EN_DASH = "\u2013"


def span(values: Iterable[float], spec: str = "{:.2f}", sep: str = EN_DASH) -> str:
    """``lo`` to ``hi`` of the values that are numbers (one value alone if they agree), else n/a."""
    xs = [x for x in values if not math.isnan(x)]
    if not xs:
        return "n/a"
    lo, hi = fmt(min(xs), spec), fmt(max(xs), spec)
    return lo if lo == hi else f"{lo}{sep}{hi}"


# ---- runs ----------------------------------------------------------------------------------


def runs_of(doc: dict[str, Any]) -> list[Run]:
    runs: list[Run] = doc.get("prefork", {}).get("runs", [])
    return runs


def _find(runs: Iterable[Run], server: str, workers: int, variant: str) -> Optional[Run]:
    for run in runs:
        if (run["server"], run["workers"], run["variant"]) == (server, workers, variant):
            return run if not run.get("error") else None
    return None


def find_run(doc: dict[str, Any], server: str, workers: int, variant: str) -> Optional[Run]:
    return _find(runs_of(doc), server, workers, variant)


def cells(doc: dict[str, Any]) -> list[tuple[str, int]]:
    cfg = doc.get("prefork", {}).get("config", {})
    return [(s, n) for s in cfg.get("servers", []) for n in cfg.get("workers", [])]


def variants_in(doc: dict[str, Any], server: str, workers: int) -> list[str]:
    """The variants this cell ran (failed ones included), in the usual order."""
    ran = {r["variant"] for r in runs_of(doc) if (r["server"], r["workers"]) == (server, workers)}
    return [v for v in VARIANTS if v in ran]


def mem(run: Optional[Run], phase: str, key: str = "pss_kb") -> float:
    if run is None or phase not in run.get("memory", {}):
        return nan
    return float(run["memory"][phase][key])


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else nan


def per_request(amount: float, requests: float) -> float:
    return amount / requests if requests > 0 else nan


def warm_cpu_per_request(run: Optional[Run]) -> float:
    """The workers' CPU seconds (user + system) per request in the warm load; nan if unknown."""
    if not run or "warm_user_s" not in run:
        return nan
    return per_request(run["warm_user_s"] + run["warm_system_s"], run.get("warm_requests", 0))


def respawn_parts(run: Optional[Run]) -> tuple[float, float]:
    """Medians over the kills of (kill -> replacement forked, fork -> serving), in seconds.

    Runs stored before the fork was timed have neither: nan.
    """
    if run is None or not run.get("respawn_fork_s"):
        return nan, nan
    forks = [float(x) for x in run["respawn_fork_s"]]
    after = [float(s) - float(f) for s, f in zip(run["respawn_s"], forks)]
    return median(forks), median(after)


def _seconds(run: Optional[Run], key: str) -> float:
    value = run.get(key) if run else None
    return float(value) if value else nan


# ---- pooling several full runs (throughput and worker CPU) ---------------------------------

# What a run keeps of each server run for pooling: the paired rounds and the CPU totals.
POOL_KEYS = (
    "server",
    "workers",
    "variant",
    "error",
    "settled",
    "throughput_rounds",
    "warm_throughput_rounds",
    "warm_user_s",
    "warm_system_s",
    "warm_requests",
)


def pool_entry(prefork: dict[str, Any], label: str, date: str) -> dict[str, Any]:
    return {
        "label": label,
        "date": date,
        "runs": [{k: r[k] for k in POOL_KEYS if k in r} for r in prefork.get("runs", [])],
    }


def pool_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The full runs pooled for throughput: ``doc["pool"]``, or this run alone."""
    pool: list[dict[str, Any]] = doc.get("pool") or []
    if pool:
        return pool
    if not doc.get("prefork"):
        return []
    return [pool_entry(doc["prefork"], "this run", doc.get("machine", {}).get("date", "?"))]


def pooled_ratio(
    doc: dict[str, Any], server: str, workers: int, variant: str, key: str
) -> dict[str, Any]:
    """The per-round ratios to lazy of every pooled run, as one median (with quartiles), and
    each run's own median."""
    pairs: list[float] = []
    per_run: list[float] = []
    for entry in pool_entries(doc):
        run = _find(entry["runs"], server, workers, variant)
        lazy = _find(entry["runs"], server, workers, "lazy")
        these = paired_ratios(run.get(key, []), lazy.get(key, [])) if run and lazy else []
        pairs += these
        per_run.append(median(these) if these else nan)
    q1, q3 = quartiles(pairs) if pairs else (nan, nan)
    return {
        "median": median(pairs) if pairs else nan,
        "q1": q1,
        "q3": q3,
        "pairs": len(pairs),
        "runs": sum(1 for m in per_run if not math.isnan(m)),
        "per_run": per_run,
    }


def pooled_cpu_ratio(doc: dict[str, Any], server: str, workers: int, variant: str) -> float:
    """Workers' CPU per request in the warm load, over every pooled run, to lazy's. Whole-load
    totals, not per-round pairs: the workers' CPU counters tick at 100 Hz, too coarse for 1 s
    rounds."""
    totals = {variant: [0.0, 0.0], "lazy": [0.0, 0.0]}
    for entry in pool_entries(doc):
        for v, acc in totals.items():
            run = _find(entry["runs"], server, workers, v)
            if run and "warm_user_s" in run and run.get("warm_requests"):
                acc[0] += run["warm_user_s"] + run["warm_system_s"]
                acc[1] += run["warm_requests"]
    mine, lazy = (per_request(*totals[v]) for v in (variant, "lazy"))
    return ratio(mine, lazy)


# ---- preload vs lazy -----------------------------------------------------------------------


def _ratio_row(doc: dict[str, Any], server: str, workers: int, variant: str) -> dict[str, Any]:
    run, lazy = find_run(doc, server, workers, variant), find_run(doc, server, workers, "lazy")
    row: dict[str, Any] = {"server": server, "workers": workers, "variant": variant}
    for phase in PHASES:
        for key, field in (("pss", "pss_kb"), ("workers_pss", "workers_pss_kb"), ("uss", "uss_kb")):
            row[f"{key}_{phase}"] = ratio(mem(run, phase, field), mem(lazy, phase, field))
    row["startup"] = ratio(_seconds(run, "startup_s"), _seconds(lazy, "startup_s"))
    row["respawn"] = ratio(_seconds(run, "respawn_median_s"), _seconds(lazy, "respawn_median_s"))
    # None for runs stored before settling existed.
    row["settled"] = run.get("settled") if run else None
    row["respawn_parts"] = parts = (respawn_parts(run), respawn_parts(lazy))
    row["respawn_after_fork"] = ratio(parts[0][1], parts[1][1])
    for key, rounds in (
        ("throughput", "throughput_rounds"),
        ("warm_throughput", "warm_throughput_rounds"),
    ):
        pooled = pooled_ratio(doc, server, workers, variant, rounds)
        row[key], row[f"{key}_q1"], row[f"{key}_q3"] = pooled["median"], pooled["q1"], pooled["q3"]
        row[f"{key}_per_run"], row[f"{key}_runs"] = pooled["per_run"], pooled["runs"]
    row["warm_cpu_per_request"] = pooled_cpu_ratio(doc, server, workers, variant)
    return row


def prefork_ratios(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (server, workers, variant != lazy): every figure as a ratio to lazy.
    Throughput and worker CPU pool every run in ``doc["pool"]``; the rest is this run's."""
    return [
        _ratio_row(doc, server, workers, variant)
        for server, workers in cells(doc)
        for variant in variants_in(doc, server, workers)
        if variant != "lazy"
    ]


# The forkguard runs set against the recipe: like for like first (the app changed as the
# recipe needs it, import-time session closed), then the reported app unchanged.
SAME_APP = "forkguard-closed"
DISPOSE_PAIRS = (SAME_APP, "forkguard")


def dispose_cells(doc: dict[str, Any]) -> list[tuple[str, int]]:
    """The cells that ran the ``dispose(close=False)`` variant."""
    return [c for c in cells(doc) if "dispose" in variants_in(doc, *c)]


def same_app_measured(doc: dict[str, Any]) -> bool:
    """Whether every dispose cell also ran forkguard on the recipe's app (older runs did not)."""
    return all(SAME_APP in variants_in(doc, *c) for c in dispose_cells(doc))


def dispose_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """forkguard against SQLAlchemy's recipe (``dispose``), beside forkguard against lazy, per
    cell that ran it, forkguard variant that ran there (:data:`DISPOSE_PAIRS`) and phase: total
    PSS ratios and per-worker private memory (USS) in MB."""
    out: list[dict[str, Any]] = []
    for server, workers in dispose_cells(doc):
        here = variants_in(doc, server, workers)
        dispose, lazy = (find_run(doc, server, workers, v) for v in ("dispose", "lazy"))
        for variant in (v for v in DISPOSE_PAIRS if v in here):
            fg = find_run(doc, server, workers, variant)
            for phase in PHASES:
                private = [
                    mem(r, phase, "workers_uss_kb") / 1024 / workers for r in (fg, dispose, lazy)
                ]
                out.append(
                    {
                        "server": server,
                        "workers": workers,
                        "variant": variant,
                        "phase": phase,
                        "pss_vs_dispose": ratio(mem(fg, phase), mem(dispose, phase)),
                        "pss_vs_lazy": ratio(mem(fg, phase), mem(lazy, phase)),
                        "private_mb": private,
                        "private_mb_delta": private[0] - private[1],
                    }
                )
    return out


# ---- the ORM path and the checkout split ---------------------------------------------------


def orm_case(doc: dict[str, Any], case: str) -> Optional[dict[str, Any]]:
    """One ORM case's analysis on its primary clock (CPU in-process, wall for a round trip)."""
    res = doc.get("orm", {}).get("cases", {}).get(case)
    if not res:
        return None
    primary: dict[str, Any] = res[res["clock"]]
    return primary


def checkout_split(doc: dict[str, Any], backend: str) -> tuple[float, float]:
    """(floor, forkguard's own) CPU ns of one bare checkout: the floor is SQLAlchemy's slow
    path for any checkout listener (a do-nothing listener's cost), forkguard's own the rest."""
    split = doc.get("hotpath", {}).get("bare", {}).get(backend, {}).get("split_ns", {})
    return (
        split.get("checkout_dispatch", {}).get("median", nan),
        split.get("forkguard_own", {}).get("median", nan),
    )


def reset_listener_bytecodes(doc: dict[str, Any]) -> Optional[int]:
    """How many more of SQLAlchemy's bytecodes one checkout + checkin runs once any ``reset``
    listener exists (an opcode trace with a do-nothing one); None if not recorded."""
    for bare in doc.get("hotpath", {}).get("bare", {}).values():
        code = bare.get("bytecodes", {})
        if "noop-reset" in code:
            return int(code["noop-reset"]["sqlalchemy"] - code["unguarded"]["sqlalchemy"])
    return None


def round_spread(doc: dict[str, Any]) -> tuple[float, float]:
    """How far one paired warm round's ratio strays from its median in this run: the smallest
    and largest half-interquartile range over the forkguard rows, as fractions."""
    halves = [
        (r["warm_throughput_q3"] - r["warm_throughput_q1"]) / 2
        for r in prefork_ratios(doc)
        if r["variant"] == "forkguard" and not math.isnan(r["warm_throughput_q1"])
    ]
    return (min(halves), max(halves)) if halves else (nan, nan)
