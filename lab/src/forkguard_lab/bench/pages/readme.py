"""The README's bench block ("Why preload?" in figures): the ratios to lazy-apps, the
throughput and respawn, forkguard against SQLAlchemy's recipe, the ORM path and the hot path,
each paragraph wrapped at the README's width. :mod:`..readme` puts it between the markers.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Optional

from ..figures import (
    SAME_APP,
    checkout_split,
    dispose_rows,
    fmt,
    md_table,
    orm_case,
    pool_entries,
    prefork_ratios,
    round_spread,
    span,
)
from ..orm import TARGET_CASE
from ..prefork import DISPOSE_CELL_VARIANTS, MASTER_CYCLE_S
from ..tables import ratio_cell
from ..targets import DISPOSE_PRIVATE_MB_TARGET, DISPOSE_PSS_TARGET, ORM_TARGET
from ..terms import ARROW, NOT_MEASURED, SERVER_NAMES, TIMES, VARIANT_LABELS
from .shared import READ_SLICES, app_md, cores


def readme_block(doc: dict[str, Any]) -> str:
    """The README's "Why preload?" figures, from the same JSON as the docs."""
    rows = prefork_ratios(doc)
    n: Optional[int] = min((r["workers"] for r in rows), default=None)
    first = [r for r in rows if r["workers"] == n and r["variant"] not in DISPOSE_CELL_VARIANTS]
    paragraphs = [
        _intro(doc, n),
        _memory(doc),
        _throughput(doc) + _respawn(doc),
        _dispose(doc),
        _orm(doc),
        _hotpath(doc),
    ]
    wrapped = [_wrap(p) for p in paragraphs if p.strip()]
    return "\n\n".join([wrapped[0], _table(first), *wrapped[1:]]) + "\n"


def _wrap(paragraph: str) -> str:
    """One paragraph at the README's line width (never breaking a word or a `code` span)."""
    return textwrap.fill(
        paragraph.strip(), width=100, break_long_words=False, break_on_hyphens=False
    )


def _intro(doc: dict[str, Any], n: Any) -> str:
    pcfg = doc.get("prefork", {}).get("config", {})
    entries = pool_entries(doc)
    pooled = f", pooled over {len(entries)} full runs" if len(entries) > 1 else ""
    slice_s = pcfg.get("load_seconds", math.nan) / max(1, pcfg.get("load_rounds", 1))
    return (
        "Measured by `make bench` (`python -m forkguard_lab.bench`; full tables, method and "
        "machine in [docs/memory.md](docs/memory.md) and [docs/benchmarks.md](docs/benchmarks.md); "
        "`make docs` regenerates them and this block from "
        "[docs/data/results.json](docs/data/results.json)): "
        f"{app_md(pcfg)}, {n} workers, preloaded with "
        "forkguard vs lazy-apps / no `--preload`, as a ratio measured in the same run (total "
        "PSS of master + workers; *after load*: "
        f"{pcfg.get('first_load_requests_per_worker')} requests per worker; throughput: steady "
        "state - after the full collections and once copy-on-write has settled - median of "
        f"the paired {fmt(slice_s, '{:.1f}')} s rounds{pooled}, with the first load beside it; "
        f"run {doc.get('machine', {}).get('date')}, `{doc.get('command')}`):\n"
    )


def _table(rows: list[dict[str, Any]]) -> str:
    return md_table(
        (
            "server",
            "variant, vs lazy-apps",
            "memory at ready",
            "after load",
            "after load + full GC",
            "start-up",
            "respawn",
            f"of which fork {ARROW} serving",
            "req/s (warm)",
            "req/s (first load)",
        ),
        [
            [
                SERVER_NAMES.get(r["server"], r["server"]),
                VARIANT_LABELS[r["variant"]].replace("freeze_gc", "`freeze_gc`"),
                *(
                    fmt(r[k]) + TIMES
                    for k in (
                        "pss_ready",
                        "pss_load",
                        "pss_gc",
                        "startup",
                        "respawn",
                        "respawn_after_fork",
                        "warm_throughput",
                        "throughput",
                    )
                ),
            ]
            for r in rows
        ],
    )


def _memory(doc: dict[str, Any]) -> str:
    rows = prefork_ratios(doc)
    freeze_warm = [r["pss_warm"] for r in rows if r["variant"] == "forkguard-freeze"]
    pcfg = doc.get("prefork", {}).get("config", {})
    return (
        "One full `gc.collect()` in a worker un-shares almost the whole inherited heap; "
        "`forkguard.install(freeze_gc=True)` freezes it at fork, and the same collection then "
        "changes nothing. Reference counts still un-share what requests read (a worker that "
        f"has served a few thousand requests touching {100 / READ_SLICES:g} % of the data each "
        "has written to "
        f"most of it: {span(freeze_warm)}{TIMES} after settling and "
        f"{fmt(pcfg.get('load_seconds', math.nan), '{:.0f}')} s more load), which no GC setting "
        "prevents; recycling workers resets it.\n"
    )


def _throughput(doc: dict[str, Any]) -> str:
    rows = [r for r in prefork_ratios(doc) if r["variant"] in ("forkguard", "forkguard-freeze")]
    lo, hi = round_spread(doc)
    warm = span([r["warm_throughput"] for r in rows])
    cpu = span([r["warm_cpu_per_request"] for r in rows])
    return (
        f"Warm throughput is {warm}{TIMES} lazy-apps' over the cells (quartiles in "
        f"`docs/benchmarks.md`: on this {cores(doc)}-core machine one paired round strays "
        f"{span([100 * lo, 100 * hi], '{:.0f}')} % from the median), and the workers' CPU time "
        f"per request, counted over the whole warm load, is {cpu}{TIMES} lazy-apps'."
    )


def _respawn(doc: dict[str, Any]) -> str:
    parts = []
    for server in ("uwsgi", "gunicorn"):
        rows = [
            r for r in prefork_ratios(doc) if r["server"] == server and r["variant"] == "forkguard"
        ]
        if rows:
            after = span([r["respawn_after_fork"] for r in rows], "{:.3f}")
            forks = span([r["respawn_parts"][0][0] for r in rows])
            parts.append((SERVER_NAMES[server], after, forks))
    if not parts:
        return ""
    text = " ".join(
        f"{name}: kill {ARROW} fork {forks} s, the same for every variant; from that fork on, a "
        f"preloaded worker serves in {after}{TIMES} the time a lazy one takes."
        for name, after, forks in parts
    )
    return (
        " Respawn splits into the server's own cycle and the new worker's start (uWSGI's master "
        f"checks for dead workers once per {MASTER_CYCLE_S:g} s `check-interval`, and a death "
        f"does not wake it; the benchmark spreads its kills evenly over that cycle). {text}\n"
    )


SAME_APP_WORDS = "on the same app (its import-time session closed, as the recipe needs)"


def _dispose_ready(doc: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    return [
        r
        for r in dispose_rows(doc)
        if r["phase"] == "ready" and r["variant"] == variant and not math.isnan(r["pss_vs_dispose"])
    ]


def _dispose_figures(rows: list[dict[str, Any]]) -> str:
    return (
        f"{span([r['pss_vs_dispose'] for r in rows], '{:.3f}')}{TIMES} and each worker's "
        f"private memory {span([r['private_mb_delta'] for r in rows], '{:+.2f}', ' to ')} MB more"
    )


def _dispose(doc: dict[str, Any]) -> str:
    same, reported = _dispose_ready(doc, SAME_APP), _dispose_ready(doc, "forkguard")
    if not same and not reported:
        return ""
    cells = ", ".join(
        f"{SERVER_NAMES.get(r['server'], r['server'])} x{r['workers']}" for r in same or reported
    )
    like = f"is {_dispose_figures(same)}" if same else NOT_MEASURED
    unchanged = (
        "; on the reported app unchanged (forkguard resets the session it inherits), "
        f"{_dispose_figures(reported)}"
        if reported
        else ""
    )
    return (
        "Against SQLAlchemy's own recipe instead of lazy-apps - preloaded with "
        "`engine.dispose(close=False)` in a post-fork hook, no forkguard - forkguard's total PSS "
        f"at ready, {SAME_APP_WORDS}, {like}{unchanged} ({cells}; targets, like for like: "
        f"<= {DISPOSE_PSS_TARGET}{TIMES} and <= {DISPOSE_PRIVATE_MB_TARGET:.0f} MB).\n"
    )


def _orm(doc: dict[str, Any]) -> str:
    a = orm_case(doc, TARGET_CASE)
    if a is None:
        return ""
    flask = orm_case(doc, "flask")
    flask_text = ""
    if flask is not None:
        flask_ratio = fmt(flask["ratio"]["forkguard"]["median"], "{:.3f}")
        flask_text = f"; a Flask-SQLAlchemy request doing one query: {flask_ratio}{TIMES}"
    return (
        "The ORM path: forkguard registers no per-statement listener by default, and "
        "`Session.execute(select(...))` on sqlite costs "
        f"{fmt(a['ratio']['forkguard']['median'], '{:.3f}')}{TIMES} unguarded in CPU time "
        f"(target <= {ORM_TARGET}){flask_text}. `orm_fork_check=True` costs "
        f"{fmt(a['ratio']['forkguard-orm-check']['median'], '{:.3f}')}{TIMES}, of which "
        f"{fmt(a['ratio']['noop-orm']['median'], '{:.3f}')}{TIMES} is what any "
        "`do_orm_execute` listener costs (SQLAlchemy builds an `ORMExecuteState` per "
        "statement).\n"
    )


def _hotpath(doc: dict[str, Any]) -> str:
    hot = doc.get("hotpath", {})
    query = hot.get("query", {})
    if not query:
        return ""
    ratios = " and ".join(f"{ratio_cell(q['ratio_forkguard'])} on {b}" for b, q in query.items())
    bare = hot.get("bare", {})
    splits = [checkout_split(doc, b) for b in bare]
    added = span([b["added_ns"]["median"] / 1000 for b in bare.values()])
    return (
        "forkguard's cost on the pool hot path (`docs/benchmarks.md`): one `checkout` listener "
        "and nothing on checkin. Checkout + `SELECT 1` + checkin guarded/unguarded (median, "
        f"quartiles of the paired rounds): {ratios}. A bare checkout/checkin - no query - gains "
        f"{added} µs of CPU on this machine: a floor of {span([s[0] for s in splits], '{:.0f}')} "
        "ns, SQLAlchemy's own checkout slow path, which *any* `checkout` listener turns on (its "
        "documented pid recipe included), plus forkguard's own "
        f"{span([s[1] for s in splits], '{:+.0f}', ' to ')} ns"
        f"{_instructions(doc)}.\n"
    )


def _instructions(doc: dict[str, Any]) -> str:
    ins = doc.get("instructions", {})
    if "split" not in ins:
        return ""
    split, per_op = ins["split"], ins["per_op"]
    share = 100 * split["checkout_dispatch"] / split["added"] if split["added"] else math.nan
    code = _bytecodes(doc)
    return (
        "; counted in instructions, which do not move with the machine's load: "
        f"{fmt(split['added'] / 1000, '{:+.1f}')}k on a "
        f"{fmt(per_op['unguarded'] / 1000, '{:.0f}')}k-instruction checkout, of which "
        f"{fmt(split['checkout_dispatch'] / 1000, '{:.2f}')}k ({fmt(share, '{:.0f}')} %) is the "
        f"floor and {fmt(split['forkguard_own'] / 1000, '{:+.2f}')}k forkguard's code{code}"
    )


def _bytecodes(doc: dict[str, Any]) -> str:
    for bare in doc.get("hotpath", {}).get("bare", {}).values():
        code = bare.get("bytecodes")
        if code:
            micro = doc.get("hotpath", {}).get("micro", {})
            what = (
                "one byte read of a `MADV_WIPEONFORK` page"
                if micro.get("wipeonfork_marker")
                else "a `getpid()` check (no `MADV_WIPEONFORK` here)"
            )
            return (
                f": {what} ({code['forkguard']['forkguard']} bytecodes, against "
                f"{code['noop-checkout']['benchmark']} for a do-nothing listener)"
            )
    return ""
