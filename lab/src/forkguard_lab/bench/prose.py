"""The words around the figures: the ORM section, forkguard against SQLAlchemy's recipe, how
runs are pooled, the sentences that quote the machine, and the README's block.

Every number in here comes from ``results.json`` through :mod:`.figures`; nothing about the
machine is assumed (its cores, its noise) - the run says what it was.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Optional

from .figures import (
    checkout_split,
    dispose_rows,
    fmt,
    md_table,
    orm_case,
    pool_entries,
    prefork_ratios,
    reset_listener_bytecodes,
    round_spread,
    runs_of,
    span,
)
from .orm import CASES, TARGET_CASE
from .prefork import MASTER_CYCLE_S, VARIANT_LABELS
from .targets import (
    DISPOSE_PRIVATE_MB_TARGET,
    DISPOSE_PSS_TARGET,
    ORM_TARGET,
    OWN_INSTRUCTIONS_TARGET,
    OWN_NS_TARGET,
    POOLED_RUNS_WANTED,
)

TIMES = "\u00d7"
ARROW = "\u2192"
DISPOSE_LABEL = VARIANT_LABELS["dispose"]
SERVER_NAMES = {"uwsgi": "uWSGI", "gunicorn": "gunicorn"}
ORM_CASES = {
    "sqlite-statement": "sqlite: one statement in an open session",
    "sqlite-session": "sqlite: a session per statement (checkout, begin, statement, close)",
    "mariadb": "MariaDB: one statement in an open session",
    "postgresql": "PostgreSQL: one statement in an open session",
    "flask": "Flask-SQLAlchemy: one request (test client) doing one query, sqlite",
}
ORM_HEADER = (
    "case",
    "timed",
    "unguarded µs/op",
    "forkguard / unguarded (Q1-Q3)",
    "ns added",
    "other clock: forkguard / unguarded",
    "floor: no-op do_orm_execute / unguarded",
    "orm_fork_check=True / unguarded",
    "orm_fork_check: own ns over the floor",
)
DISPOSE_HEADER = (
    "server",
    "N",
    "phase",
    "total PSS: forkguard / dispose(close=False)",
    "forkguard / lazy",
    "private MB per worker: forkguard",
    "dispose(close=False)",
    "lazy",
    "forkguard - dispose(close=False)",
)
PHASE_NAMES = {
    "ready": "ready",
    "load": "after load",
    "gc": "after full GC",
    "warm": "after warm load",
}


def page_md(doc: dict[str, Any]) -> str:
    """The page a copy-on-write fault copies: its size on the machine that ran, if recorded."""
    size = doc.get("machine", {}).get("page_size")
    return f" ({size // 1024} KiB)" if size else ""


def _cores(doc: dict[str, Any]) -> str:
    return str(doc.get("machine", {}).get("cores_usable", "?"))


# ---- the ORM path --------------------------------------------------------------------------


def _ratio_cell(r: dict[str, float]) -> str:
    return f"{fmt(r['median'], '{:.3f}')} ({fmt(r['q1'], '{:.3f}')}-{fmt(r['q3'], '{:.3f}')})"


def orm_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    cases = doc.get("orm", {}).get("cases", {})
    for case in sorted(cases, key=lambda c: CASES.index(c) if c in CASES else len(CASES)):
        res, a = cases[case], orm_case(doc, case)
        if a is None:
            continue
        other = res["wall" if res["clock"] == "cpu" else "cpu"]
        rows.append(
            [
                f"{ORM_CASES.get(case, case)} ({res.get('driver', res.get('backend'))})",
                "this thread's CPU" if res["clock"] == "cpu" else "wall (round trip)",
                fmt(a["ns"]["unguarded"]["median"] / 1000, "{:.1f}"),
                _ratio_cell(a["ratio"]["forkguard"]),
                fmt(a["added_ns"]["forkguard"]["median"], "{:+.0f}"),
                fmt(other["ratio"]["forkguard"]["median"], "{:.3f}"),
                _ratio_cell(a["ratio"]["noop-orm"]),
                _ratio_cell(a["ratio"]["forkguard-orm-check"]),
                fmt(a["orm_check_own_ns"]["median"], "{:+.0f}"),
            ]
        )
    return rows


def orm_md(doc: dict[str, Any]) -> str:
    orm = doc.get("orm")
    if not orm:
        return ""
    cfg = orm.get("config", {})
    return (
        "## 1b. The ORM path: `Session.execute(select(Model).where(Model.id == 1))`\n\n"
        "The hot path's method (one process, `forkguard.install()` / `uninstall()` between "
        f"rounds, {cfg.get('rounds')} interleaved rounds, paired per-round ratios) on the ORM: "
        "a mapped `id`/`name` class, one row, `session.execute(stmt).scalar_one()`. Four "
        "configurations on the same engines and tables: *unguarded*; *forkguard* as installed "
        "(`install()`: no per-statement listener, `orm_fork_check` is off by default); one "
        "do-nothing `do_orm_execute` listener - the floor: once any such listener exists "
        "SQLAlchemy builds an `ORMExecuteState` for every statement, before the listener's "
        "first line; and `install(orm_fork_check=True)`, forkguard's opt-in per-statement fork "
        "check (that floor plus one fork check). The harness checks before every round that "
        "exactly that configuration's listeners are in effect. In-process cases are timed in "
        "this thread's CPU time; MariaDB and PostgreSQL in wall time (what a request waits for "
        "the round trip), with the client's CPU beside. Iterations per round: "
        f"{cfg.get('statement_iterations')} statements on sqlite, "
        f"{cfg.get('session_iterations')} sessions, {cfg.get('server_iterations')} round "
        f"trips, {cfg.get('flask_iterations')} Flask requests. The target "
        f"(forkguard / unguarded <= {ORM_TARGET}) is on the first row.\n\n"
        + md_table(ORM_HEADER, orm_rows(doc))
        + "\n\nA statement in a session that already holds its connection passes through none "
        "of forkguard's code; a new session adds one checkout (forkguard's checkout listener) "
        "and one `after_begin` (forkguard notes which engine the session uses: once per "
        "transaction, not per statement); a Flask-SQLAlchemy request is one such session.\n"
    )


# ---- checkout: floor + forkguard's own -----------------------------------------------------


def checkout_md(doc: dict[str, Any]) -> str:
    """The bare checkout as floor + forkguard's own, in ns and instructions, with targets."""
    parts = []
    for backend in doc.get("hotpath", {}).get("bare", {}):
        floor, own = checkout_split(doc, backend)
        parts.append(f"{backend}: floor {fmt(floor, '{:+.0f}')} ns + own {fmt(own, '{:+.0f}')} ns")
    split = doc.get("instructions", {}).get("split")
    if split:
        parts.append(
            f"instructions ({doc['instructions']['backend']}): floor "
            f"{fmt(split['checkout_dispatch'], '{:+,.0f}')} + own "
            f"{fmt(split['forkguard_own'], '{:+,.0f}')}"
        )
    if not parts:
        return ""
    return (
        "A bare checkout under forkguard is **floor + forkguard's own**: the floor is what "
        "SQLAlchemy's slow path costs for *any* `checkout` listener (the do-nothing listener's "
        "cost over none), forkguard's own is the rest (targets: own <= "
        f"{OWN_NS_TARGET:.0f} ns and <= {OWN_INSTRUCTIONS_TARGET:.0f} instructions). This run: "
        + "; ".join(parts)
        + ".\n"
    )


def reset_listener_md(doc: dict[str, Any]) -> str:
    n = reset_listener_bytecodes(doc)
    if n is None:
        return "(not counted in this run)"
    return (
        f"{n} more of SQLAlchemy's bytecodes per checkout + checkin with one do-nothing `reset` "
        "listener, by the opcode trace above"
    )


# ---- forkguard against SQLAlchemy's recipe -------------------------------------------------


def dispose_table(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["server"],
            str(r["workers"]),
            PHASE_NAMES[r["phase"]],
            fmt(r["pss_vs_dispose"], "{:.3f}"),
            fmt(r["pss_vs_lazy"], "{:.3f}"),
            *(fmt(x, "{:.1f}") for x in r["private_mb"]),
            fmt(r["private_mb_delta"], "{:+.2f}"),
        ]
        for r in dispose_rows(doc)
    ]
    return md_table(DISPOSE_HEADER, rows)


def _hooks_ran(doc: dict[str, Any]) -> str:
    counts = [r.get("postfork_runs") for r in runs_of(doc) if r["variant"] == "dispose"]
    if not counts or any(c is None for c in counts):
        return ""
    ok = all(c and all(n >= 1 for n in c) for c in counts)
    return (
        " Every worker of that variant had run its hook when it answered its first request."
        if ok
        else " **Not every worker of that variant had run its hook by ready** (see "
        "`postfork_runs` in results.json)."
    )


def dispose_md(doc: dict[str, Any]) -> str:
    if not dispose_rows(doc):
        return ""
    pcfg = doc.get("prefork", {}).get("config", {})
    cells = ", ".join(f"x{n}" for n in pcfg.get("dispose_workers", []))
    return (
        "### forkguard against SQLAlchemy's own recipe: memory\n\n"
        f"Lazy-apps is the usual workaround; the other is SQLAlchemy's documented recipe. So the "
        f"{cells} cells also run *{DISPOSE_LABEL}*: preloaded like forkguard, with "
        "`engine.dispose(close=False)` in the server's post-fork hook (uWSGI `@postfork`, "
        "gunicorn `post_fork`). The recipe covers the pool, not a session that holds a "
        "connection across the fork: with the reported app's import-time transaction left open, "
        "every worker would use the master's connection (and a respawned worker's session would "
        "stay in a failed transaction), so this variant's app closes that session at import - "
        "the one difference in the app. Against it, what is left is forkguard's own memory in "
        f"each worker. Targets (at ready): total PSS forkguard / dispose(close=False) <= "
        f"{DISPOSE_PSS_TARGET}, and private memory (USS) per worker no more than "
        f"{DISPOSE_PRIVATE_MB_TARGET:.0f} MB above it. forkguard / lazy beside it; later phases "
        "are shown too, where reference counts touched by random requests un-share pages in "
        "every variant (so they move by more than forkguard's cost from one server to the "
        f"next).{_hooks_ran(doc)}\n\n" + dispose_table(doc) + "\n"
    )


# ---- throughput: pooling and noise ---------------------------------------------------------


def pooling_md(doc: dict[str, Any]) -> str:
    entries = pool_entries(doc)
    if not entries:
        return ""
    if len(entries) == 1:
        return (
            "Throughput and worker CPU come from this one run; the throughput target is on the "
            f"pooled median of {POOLED_RUNS_WANTED} full runs (`--runs {POOLED_RUNS_WANTED}`, "
            "or `--pool` over stored runs), so a single run marks it as such.\n"
        )
    dates = ", ".join(f"{e.get('label')} ({e.get('date')})" for e in entries)
    return (
        f"Throughput and worker CPU per request pool {len(entries)} full runs: {dates}. The "
        "pooled ratio is the median of every run's paired rounds together (each pair measured "
        "within one run); worker CPU per request is the workers' CPU over all the runs' warm "
        "loads divided by their requests. Each run's own median is listed beside the target. "
        "Everything else on this page is the first run's.\n"
    )


def throughput_noise_md(doc: dict[str, Any]) -> str:
    lo, hi = round_spread(doc)
    pcfg = doc.get("prefork", {}).get("config", {})
    slice_s = pcfg.get("load_seconds", math.nan) / max(1, pcfg.get("load_rounds", 1))
    moves = (
        f"one paired {fmt(slice_s, '{:.1f}')} s round's ratio strays "
        f"{span([100 * lo, 100 * hi], '{:.0f}')} % (half the quartile range) from the median "
        "in this run"
    )
    return (
        "Read the throughput ratios with their quartiles (targets table in benchmarks.md): on "
        f"this {_cores(doc)}-core machine, shared with the load client, {moves}, and a median "
        "that close to 1.0 says *no difference that this machine can resolve*, not a gain or a "
        "loss.\n"
    )


def refcount_md(pcfg: dict[str, Any]) -> str:
    """What 1 - exp(-k / 1000) comes to for the first load's k, and for a long-lived worker."""
    k = int(pcfg.get("first_load_requests_per_worker", 0))
    return ", ".join(
        f"{100 * (1 - math.exp(-n / 1000)):.0f} % after {n}{label}"
        for n, label in ((k, " (the first load here)"), (3000, ""))
    )


def same_cores_md(doc: dict[str, Any]) -> str:
    return f"The load client runs on the same {_cores(doc)} cores as the workers.\n"


def variant_count_md(doc: dict[str, Any]) -> str:
    """How many servers a cell interleaves its load between ("3 or 4"), from the runs."""
    per_cell: dict[tuple[str, int], set[str]] = {}
    for r in runs_of(doc):
        per_cell.setdefault((r["server"], r["workers"]), set()).add(r["variant"])
    counts = sorted({len(v) for v in per_cell.values()})
    return " or ".join(map(str, counts)) if counts else "all the"


# ---- README --------------------------------------------------------------------------------


def _readme_table(rows: list[dict[str, Any]]) -> str:
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


def _readme_intro(doc: dict[str, Any], n: Any) -> str:
    pcfg = doc.get("prefork", {}).get("config", {})
    entries = pool_entries(doc)
    pooled = f", pooled over {len(entries)} full runs" if len(entries) > 1 else ""
    slice_s = pcfg.get("load_seconds", math.nan) / max(1, pcfg.get("load_rounds", 1))
    return (
        "Measured by `make bench` (`python -m forkguard_lab.bench`; full tables, method and "
        "machine in [docs/memory.md](docs/memory.md) and [docs/benchmarks.md](docs/benchmarks.md); "
        "`make docs` regenerates them and this block from "
        "[docs/data/results.json](docs/data/results.json)): a Flask-SQLAlchemy app holding "
        f"~{fmt(pcfg.get('mb', math.nan), '{:.0f}')} MB at import, {n} workers, preloaded with "
        "forkguard vs lazy-apps / no `--preload`, as a ratio measured in the same run (total "
        "PSS of master + workers; *after load*: "
        f"{pcfg.get('first_load_requests_per_worker')} requests per worker; throughput: steady "
        "state - after the full collections and once copy-on-write has settled - median of "
        f"the paired {fmt(slice_s, '{:.1f}')} s rounds{pooled}, with the first load beside it; "
        f"run {doc.get('machine', {}).get('date')}, `{doc.get('command')}`):\n"
    )


def _readme_memory(doc: dict[str, Any]) -> str:
    rows = prefork_ratios(doc)
    freeze_warm = [r["pss_warm"] for r in rows if r["variant"] == "forkguard-freeze"]
    pcfg = doc.get("prefork", {}).get("config", {})
    return (
        "One full `gc.collect()` in a worker un-shares almost the whole inherited heap; "
        "`forkguard.install(freeze_gc=True)` freezes it at fork, and the same collection then "
        "changes nothing. Reference counts still un-share what requests read (a worker that "
        "has served a few thousand requests touching 0.1 % of the data each has written to "
        f"most of it: {span(freeze_warm)}{TIMES} after settling and "
        f"{fmt(pcfg.get('load_seconds', math.nan), '{:.0f}')} s more load), which no GC setting "
        "prevents; recycling workers resets it.\n"
    )


def _readme_throughput(doc: dict[str, Any]) -> str:
    rows = [r for r in prefork_ratios(doc) if r["variant"] in ("forkguard", "forkguard-freeze")]
    lo, hi = round_spread(doc)
    warm = span([r["warm_throughput"] for r in rows])
    cpu = span([r["warm_cpu_per_request"] for r in rows])
    return (
        f"Warm throughput is {warm}{TIMES} lazy-apps' over the cells (quartiles in "
        f"`docs/benchmarks.md`: on this {_cores(doc)}-core machine one paired round strays "
        f"{span([100 * lo, 100 * hi], '{:.0f}')} % from the median), and the workers' CPU time "
        f"per request, counted over the whole warm load, is {cpu}{TIMES} lazy-apps'."
    )


def _readme_respawn(doc: dict[str, Any]) -> str:
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


def _readme_dispose(doc: dict[str, Any]) -> str:
    ready = [r for r in dispose_rows(doc) if r["phase"] == "ready"]
    if all(math.isnan(r["pss_vs_dispose"]) for r in ready):
        return ""
    cells = ", ".join(
        f"{SERVER_NAMES.get(r['server'], r['server'])} x{r['workers']}" for r in ready
    )
    return (
        "Against SQLAlchemy's own recipe instead of lazy-apps - preloaded with "
        "`engine.dispose(close=False)` in a post-fork hook, no forkguard - forkguard's total PSS "
        f"at ready is {span([r['pss_vs_dispose'] for r in ready], '{:.3f}')}{TIMES} and each "
        "worker's private memory "
        f"{span([r['private_mb_delta'] for r in ready], '{:+.2f}', ' to ')} MB more ({cells}; "
        f"targets <= {DISPOSE_PSS_TARGET}{TIMES} and <= {DISPOSE_PRIVATE_MB_TARGET:.0f} MB).\n"
    )


def _readme_orm(doc: dict[str, Any]) -> str:
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


def _readme_hotpath(doc: dict[str, Any]) -> str:
    hot = doc.get("hotpath", {})
    query = hot.get("query", {})
    if not query:
        return ""
    ratios = " and ".join(f"{_ratio_cell(q['ratio_forkguard'])} on {b}" for b, q in query.items())
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
        f"{_readme_instructions(doc)}.\n"
    )


def _readme_instructions(doc: dict[str, Any]) -> str:
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


def readme_block(doc: dict[str, Any]) -> str:
    """The README's "Why preload?" figures, from the same JSON as the docs."""
    rows = prefork_ratios(doc)
    n: Optional[int] = min((r["workers"] for r in rows), default=None)
    first = [r for r in rows if r["workers"] == n and r["variant"] != "dispose"]
    paragraphs = [
        _readme_intro(doc, n),
        _readme_memory(doc),
        _readme_throughput(doc) + _readme_respawn(doc),
        _readme_dispose(doc),
        _readme_orm(doc),
        _readme_hotpath(doc),
    ]
    wrapped = [_wrap(p) for p in paragraphs if p.strip()]
    return "\n\n".join([wrapped[0], _readme_table(first), *wrapped[1:]]) + "\n"


def _wrap(paragraph: str) -> str:
    """One paragraph at the README's line width (never breaking a word or a `code` span)."""
    return textwrap.fill(
        paragraph.strip(), width=100, break_long_words=False, break_on_hyphens=False
    )
