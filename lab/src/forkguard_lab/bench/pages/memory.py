"""docs/memory.md: why preload (the ratios to lazy-apps at the smallest worker count),
``freeze_gc``, every run, and how it is measured. This page's words live here; those it
shares with benchmarks.md in :mod:`.shared`.
"""

from __future__ import annotations

from typing import Any

from ..figures import fmt, md_table, prefork_ratios
from ..prefork import DISPOSE_CELL_VARIANTS
from ..server_tables import COW_HEADER, all_runs_tables, cow_rows
from ..terms import IMG_MEMORY, TIMES, VARIANT_LABELS
from . import shared
from .shared import COW_MD, header, respawn_floor_md, settling_md

WHY_HEADER = (
    "server",
    "variant, vs lazy-apps",
    "memory at ready",
    "after load",
    "after load + full GC",
    "start-up",
    "respawn",
    "req/s first load",
    "req/s warm",
)
WHY_COLUMNS = (
    "pss_ready",
    "pss_load",
    "pss_gc",
    "startup",
    "respawn",
    "throughput",
    "warm_throughput",
)

# "## Keeping the pages shared": nothing in it depends on the run.
FREEZE_PARTS = (
    "## Keeping the pages shared: `freeze_gc`\n",
    "Sharing erodes in two ways. Requests that read the working set bump reference counts, "
    "which writes to object headers and un-shares their pages (the *after load* column). And "
    "one full `gc.collect()` in a worker writes to the header of every tracked object it "
    "examines - nearly the whole inherited heap. `forkguard.install(freeze_gc=True)` (or "
    "`FORKGUARD_FREEZE_GC=1`) calls `gc.collect()` + `gc.freeze()` in the master right "
    "before each `os.fork()` (gunicorn, multiprocessing); under uWSGI, which forks from C, "
    "`gc.freeze()` runs first thing in each worker. Frozen objects sit in a permanent "
    "generation the collector never visits, so a worker's full collection leaves them, and "
    "their pages, alone.\n",
    "In the workers:\n",
    "- **Never `gc.unfreeze()` in a worker.** It moves every frozen object back into the "
    "oldest generation; the next full collection then visits - and un-shares - the whole "
    "inherited heap, exactly what the freeze avoided. In the master it is harmless but "
    "pointless: forkguard freezes again before the next fork (`gc.freeze()` is an O(1) list "
    "splice; already-frozen objects are not touched twice).\n"
    "- **What stays garbage.** Frozen objects are never collected. forkguard runs one "
    "`gc.collect()` right before the freeze, so only what is live at fork is frozen; a "
    "reference cycle the worker later drops among *inherited* objects is not reclaimed in "
    "that worker (it lives as long as the worker - workers recycled by `max-requests` bound "
    "it).\n"
    "- **Thresholds.** With the inherited heap frozen, each collection in a worker scans only "
    "the worker's own objects, so CPython's default thresholds `(700, 10, 10)` stay cheap and "
    "forkguard leaves them as they are. Instagram, before `gc.freeze()` existed, disabled "
    "the collector (`gc.disable()`) and later raised the first threshold instead; with the "
    "freeze neither is needed. A worker whose requests allocate many containers can still "
    "raise the first threshold (e.g. `gc.set_threshold(50_000, 20, 20)` in a post-fork hook) "
    "to collect less often - measure it with this benchmark before keeping it.\n"
    "- **Only where it is a pre-fork master.** The freeze runs right before `os.fork()` "
    "(`os.register_at_fork(before=...)`), once per fork, with `freeze_gc` on, and only in "
    "the process that turned it on - the one that imported the app - or, once that one has "
    "exited, the process carrying on in its place (a master that daemonized after the "
    "import, as `gunicorn --daemon --preload` does). A worker that forks helpers of its own "
    "does not freeze; `subprocess` does not run the hook at all (unless given a "
    "`preexec_fn`, it forks without the at-fork hooks). Under uWSGI it runs in each "
    "worker, once, and only if nothing is frozen there yet (`tests/test_freeze_gc.py`, "
    "`tests/test_prefork_servers.py`).\n",
)


def _why_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratio rows of the smallest worker count, without the variants set against
    dispose(close=False) only (the recipe itself and forkguard on the recipe's app)."""
    pcfg = doc.get("prefork", {}).get("config", {})
    smallest = min(pcfg.get("workers", [4]) or [4])
    return [
        r
        for r in prefork_ratios(doc)
        if r["workers"] == smallest and r["variant"] not in DISPOSE_CELL_VARIANTS
    ]


def _why(doc: dict[str, Any]) -> list[str]:
    pcfg = doc.get("prefork", {}).get("config", {})
    rows = _why_rows(doc)
    n = rows[0]["workers"] if rows else "?"
    table = md_table(
        WHY_HEADER,
        [
            [r["server"], VARIANT_LABELS[r["variant"]], *(fmt(r[k]) + TIMES for k in WHY_COLUMNS)]
            for r in rows
        ],
    )
    return [
        "## Why preload?\n",
        f"{n} workers, {shared.app_md(pcfg)}; every figure is preload (fixed by forkguard) "
        "divided by lazy-apps / gunicorn without "
        "`--preload` - the usual workaround for the fork problem - measured in the same run. "
        f"{shared.TOTAL_PSS}\n",
        table,
        "",
        "Preloading imports the app once in the master; the workers share its pages copy-on-write, "
        "start without importing anything, and a killed worker is replaced by a fork instead of a "
        "fresh import. lazy-apps gives all of that up to avoid sharing database connections - "
        "forkguard makes the sharing safe instead.\n",
        "Throughput is measured twice, each time interleaved between the "
        f"{shared.variant_count_md(doc)} servers of a cell. {shared.first_load_md(doc)}\n",
        shared.dispose_md(doc),
        COW_MD,
        shared.pooling_md(doc),
        shared.throughput_noise_md(doc),
        respawn_floor_md(doc),
    ]


def _all_runs(doc: dict[str, Any]) -> list[str]:
    return [
        "## All runs\n",
        *all_runs_tables(doc),
        "",
        md_table(COW_HEADER, cow_rows(doc)),
        "",
        f"![memory](img/{IMG_MEMORY})\n",
    ]


def _method(doc: dict[str, Any]) -> list[str]:
    pcfg = doc.get("prefork", {}).get("config", {})
    return [
        "## How it is measured\n",
        "- App: `forkguard_lab/bench/memapp.py` - Flask + Flask-SQLAlchemy; at import it builds "
        "rows of `{id, name, score, tags: [..]}` (dicts holding a list: tracked by the cyclic GC, "
        "never untracked) and runs a query with an app context pushed and never popped (the "
        "reported app's style: the master holds a checked-out connection). Every request reads "
        f"{shared.READ_SLICE}.\n"
        "- Servers: uWSGI `--master --processes N` (`--lazy-apps` for lazy) and gunicorn sync "
        "workers (`--preload` unless lazy), each in its own process group on 127.0.0.1, stopped "
        "(SIGTERM, then SIGKILL to the group) after every run.\n"
        "- *Ready*: every worker has answered a request; start-up is the time from launching the "
        f"server to that point. *After load*: {shared.LOAD_CLIENT}, "
        f"{pcfg.get('first_load_requests_per_worker')} requests per worker in "
        f"{pcfg.get('first_load_rounds')} interleaved rounds - a bound in requests, not seconds, "
        "because what the load un-shares grows with the requests each worker served (see "
        "below), whatever the machine's speed. *After full GC*: `/gc` (one `gc.collect()`) "
        f"answered by every worker. *After warm load*: after {settling_md(pcfg)}, and a further "
        f"{pcfg.get('load_seconds')} s of the same load ({pcfg.get('load_rounds')} interleaved "
        "rounds or the next multiple of the servers, the *warm* throughput). PSS/USS from "
        "`/proc/PID/smaps_rollup` of the master and every worker.\n"
        "- *Reference counts still un-share.* Reading an object writes its reference count: "
        "after k requests a worker has written to about "
        f"1 - exp(-k/{shared.READ_SLICES}) of the working set's pages "
        f"({shared.refcount_md(pcfg)}). `gc.freeze()` stops the collector's writes, not these; "
        "CPython 3.12's immortal objects cover only built-in singletons. The *after warm load* "
        "column shows where a long-running worker ends up; recycling workers (`max-requests`) "
        "resets it.\n"
        f"- *Respawn*: SIGKILL one worker, time until a new pid answers a database request; "
        f"median of {pcfg.get('respawns')} (uWSGI's floor: above).\n",
    ]


def memory_md(doc: dict[str, Any]) -> str:
    parts = [
        header(doc, "Memory: why preload, and `freeze_gc`", __name__),
        *_why(doc),
        *FREEZE_PARTS,
    ]
    parts += _all_runs(doc) + _method(doc)
    return "\n".join(parts)
