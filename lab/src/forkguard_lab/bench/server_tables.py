"""The pre-fork server tables - every run in absolute figures, the ratios to lazy,
copy-on-write and CPU per request, forkguard against ``dispose(close=False)`` - as header +
rows of strings, shared by the terminal summary and both pages."""

from __future__ import annotations

from typing import Any

from .figures import dispose_rows, fmt, mb, md_table, per_request, prefork_ratios, respawn_parts
from .figures import runs_of as _runs
from .terms import DISPOSE_APP_LABELS, PHASE_NAMES, VARIANT_LABELS

nan = float("nan")

MEMORY_HEADER = (
    "server",
    "N",
    "variant",
    "PSS ready (MB)",
    "PSS after load",
    "PSS after full GC",
    "USS after full GC",
    "PSS after warm load",
    "start-up (s)",
    "respawn (s)",
    "of which: until the master forks (s)",
    "req/s first load",
    "req/s warm",
)
RATIO_HEADER = (
    "server",
    "N",
    "variant (vs lazy)",
    "PSS ready",
    "PSS after load",
    "PSS after full GC",
    "PSS after warm load",
    "workers-only PSS ready",
    "start-up",
    "respawn",
    "respawn from the fork",
    "req/s first load",
    "req/s warm",
    "worker CPU / request, warm",
)
COW_HEADER = (
    "server",
    "N",
    "variant",
    "minor faults / request, first load",
    "settling (s)",
    "faults / request while settling: first -> last slice",
    "faults / request, warm",
    "worker CPU / request, warm: user (us)",
    "system (us)",
)
DISPOSE_HEADER = (
    "server",
    "N",
    "forkguard's app",
    "phase",
    "total PSS: forkguard / dispose(close=False)",
    "forkguard / lazy",
    "private MB per worker: forkguard",
    "dispose(close=False)",
    "lazy",
    "forkguard - dispose(close=False)",
)


def _memory_row(run: dict[str, Any]) -> list[str]:
    mem = run["memory"]
    respawn = run["respawn_median_s"]
    return [
        run["server"],
        str(run["workers"]),
        VARIANT_LABELS.get(run["variant"], run["variant"]),
        mb(mem["ready"]["pss_kb"]),
        mb(mem["load"]["pss_kb"]),
        mb(mem["gc"]["pss_kb"]),
        mb(mem["gc"]["uss_kb"]),
        mb(mem["warm"]["pss_kb"]) if "warm" in mem else "n/a",
        fmt(run["startup_s"], "{:.2f}"),
        fmt(respawn if respawn is not None else nan, "{:.2f}"),
        fmt(respawn_parts(run)[0], "{:.2f}"),
        fmt(run["throughput_rps"], "{:.0f}"),
        fmt(run.get("warm_throughput_rps", nan), "{:.0f}"),
    ]


def memory_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Every server run in absolute figures; a failed run says so in place of its figures."""
    rows = []
    for run in _runs(doc):
        if run.get("error"):
            label = VARIANT_LABELS.get(run["variant"], run["variant"])
            failed = [run["server"], str(run["workers"]), label, f"failed: {run['error'][:60]}"]
            rows.append(failed + [""] * (len(MEMORY_HEADER) - len(failed)))
        else:
            rows.append(_memory_row(run))
    return rows


def ratio_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["server"],
            str(r["workers"]),
            VARIANT_LABELS[r["variant"]],
            *(
                fmt(r[key])
                for key in (
                    "pss_ready",
                    "pss_load",
                    "pss_gc",
                    "pss_warm",
                    "workers_pss_ready",
                    "startup",
                    "respawn",
                    "respawn_after_fork",
                    "throughput",
                    "warm_throughput",
                    "warm_cpu_per_request",
                )
            ),
        ]
        for r in prefork_ratios(doc)
    ]


def _cow_row(run: dict[str, Any]) -> list[str]:
    warm_requests = run.get("warm_requests", 0)
    first_requests = run["load_requests"] - run.get("settle_requests", 0) - warm_requests
    slices = run.get("settle_faults_per_request") or []
    if "settle_s" not in run:
        settling = "n/a"
    else:
        settling = fmt(run["settle_s"], "{:.0f}") + ("" if run.get("settled") else " (cap)")
    return [
        run["server"],
        str(run["workers"]),
        VARIANT_LABELS.get(run["variant"], run["variant"]),
        fmt(per_request(run["load_minor_faults"], first_requests), "{:.1f}"),
        settling,
        f"{slices[0]:.1f} -> {slices[-1]:.2f}" if slices else "n/a",
        fmt(per_request(run.get("warm_minor_faults", nan), warm_requests), "{:.2f}"),
        fmt(per_request(run.get("warm_user_s", nan) * 1e6, warm_requests), "{:.0f}"),
        fmt(per_request(run.get("warm_system_s", nan) * 1e6, warm_requests), "{:.0f}"),
    ]


def cow_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Copy-on-write and CPU per request, per run: what is left of preloading's first touches
    in each phase, and what the warm load cost the workers."""
    return [_cow_row(run) for run in _runs(doc) if not run.get("error")]


def dispose_table(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["server"],
            str(r["workers"]),
            DISPOSE_APP_LABELS[r["variant"]],
            PHASE_NAMES[r["phase"]],
            fmt(r["pss_vs_dispose"], "{:.3f}"),
            fmt(r["pss_vs_lazy"], "{:.3f}"),
            *(fmt(x, "{:.1f}") for x in r["private_mb"]),
            fmt(r["private_mb_delta"], "{:+.2f}"),
        ]
        for r in dispose_rows(doc)
    ]
    return md_table(DISPOSE_HEADER, rows)


def all_runs_tables(doc: dict[str, Any]) -> list[str]:
    """Every run in absolute figures, then as ratios to lazy (the pages' long tables)."""
    return [md_table(MEMORY_HEADER, memory_rows(doc)), "", md_table(RATIO_HEADER, ratio_rows(doc))]
