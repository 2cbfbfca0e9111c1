"""docs/benchmarks.md: the targets, the pool hot path and bare checkout (in CPU time and in
instructions), the ORM path, the fork cost, and the pre-fork servers in brief (memory.md has
them in full). This page's words live here; those it shares with memory.md in :mod:`.shared`.
"""

from __future__ import annotations

from typing import Any

from ..figures import checkout_split, fmt, md_table, reset_listener_bytecodes
from ..server_tables import (
    COW_HEADER,
    all_runs_tables,
    cow_rows,
)
from ..tables import (
    BARE_HEADER,
    CLIENTS_HEADER,
    FORK_HEADER,
    HOT_HEADER,
    INSTRUCTION_HEADER,
    ORM_HEADER,
    bare_rows,
    client_rows,
    fork_rows,
    hotpath_rows,
    instruction_rows,
    orm_rows,
)
from ..targets import (
    CLIENT_RPS_TARGET,
    ORM_TARGET,
    OWN_INSTRUCTIONS_TARGET,
    OWN_NS_TARGET,
    TARGET_HEADER,
    target_rows,
)
from ..terms import IMG_MEMORY, IMG_OVERVIEW
from . import shared
from .shared import COW_MD, header, respawn_floor_md, settling_md


def benchmarks_md(doc: dict[str, Any]) -> str:
    sections = [_bench_intro(doc), _hot_section(doc), _bare_section(doc), _time_goes(doc)]
    sections += [[orm_md(doc), clients_md(doc)]]
    sections += [_fork_section(doc), _prefork_section(doc)]
    return "\n".join(part for section in sections for part in section)


def _bench_intro(doc: dict[str, Any]) -> list[str]:
    return [
        header(doc, "Benchmarks", __name__),
        "Every figure is a ratio of two things measured side by side in this one run; timings are "
        "medians over interleaved rounds (each round runs every configuration back to back, in an "
        "order rotated every round). Ratios are the median of the per-round ratios, with the "
        "quartiles in parentheses.\n",
        "## Targets\n",
        md_table(TARGET_HEADER, target_rows(doc)),
        "",
        f"![hot path and fork cost](img/{IMG_OVERVIEW})\n",
    ]


def _hot_section(doc: dict[str, Any]) -> list[str]:
    cfg = doc.get("hotpath", {}).get("config", {})
    return [
        "## 1. Hot path: checkout + `SELECT 1` + checkin\n",
        f"One process, one `QueuePool` engine per server (C drivers: mysqlclient, psycopg2 - the "
        f"cheaper the round trip, the more any overhead shows), {cfg.get('rounds')} rounds of "
        f"{cfg.get('query_iterations')} x "
        "`with engine.connect() as c: c.execute(text('SELECT 1'))`. "
        "Guarded and unguarded are toggled with `forkguard.install()` / `forkguard.uninstall()` "
        "between rounds: forkguard's listeners are class-level pool listeners, which SQLAlchemy "
        "applies to existing pools at once, so every configuration runs on the very same pool, "
        "connection and server session (the harness checks the listeners are really there, or "
        "really gone, before each round). The target is on wall time (what a request waits); "
        "the client's CPU time per operation (`time.thread_time_ns()`) is shown next to it: on "
        "a shared machine it is far less sensitive to other processes than wall time, and it "
        "is where forkguard's cost lives (the server's work is the same either way).\n",
        md_table(HOT_HEADER, hotpath_rows(doc)),
        "",
    ]


def _bare_section(doc: dict[str, Any]) -> list[str]:
    cfg = doc.get("hotpath", {}).get("config", {})
    return [
        "## Bare checkout + checkin (no query: pure CPU)\n",
        f"The same interleaving, {cfg.get('bare_iterations')} x `pool.connect().close()` per "
        "round on "
        "an engine with `pool_reset_on_return=None` (so checkin does no IO), timed in the "
        "benchmark thread's CPU time (`time.thread_time_ns()`), so time spent descheduled on "
        "the shared machine does not count (wall times are in results.json). One extra "
        "configuration splits the added time: one do-nothing `checkout` listener - the one pool "
        "event forkguard listens to on every checkout (it listens to none on checkin).\n",
        md_table(BARE_HEADER, bare_rows(doc)),
        "",
        _instructions_md(doc),
        checkout_md(doc),
    ]


def _time_goes(doc: dict[str, Any]) -> list[str]:
    """Where a bare checkout's added time goes: the floor, forkguard's byte read, no checkin."""
    m = doc.get("hotpath", {}).get("micro", {})
    return [
        "Where the time goes:\n",
        "- **SQLAlchemy's checkout slow path.** With no `checkout` listener and no pre-ping, "
        "`_ConnectionFairy._checkout` returns at once; with *any* listener it takes the slow path "
        "(a retry loop, attribute reads and writes, the dispatch call through `*args, **kw`"
        f"{_bytecodes_md(doc, 'sqlalchemy')}). That column is what any library hooking checkout "
        "pays - SQLAlchemy's own documented pid recipe included - before running a line of its "
        f"own{_dispatch_share_md(doc)}.\n"
        "- **forkguard's own code** is one byte read"
        f"{_bytecodes_md(doc, 'forkguard')}. The byte is a flag on a `MADV_WIPEONFORK` page "
        "(the kernel zeroes the page in every child, however it was forked) that forkguard "
        "sets once a process has nothing left for a checkout to catch: its forks are handled, "
        "and every inherited connection a pool still holds has been soft-invalidated, so "
        "SQLAlchemy itself recycles it at its next checkout. Only a child not handled yet (a "
        "fork from C that ran no hook) or a strict-mode child (whose checkouts of inherited "
        "connections must raise) takes the checked path: a fork check - a byte read of the "
        f"same page, {fmt(m.get('fork_check_ns', float('nan')), '{:.0f}')} ns per call here, "
        f"against {fmt(m.get('getpid_ns', float('nan')), '{:.0f}')} ns for `os.getpid()` and "
        f"{fmt(m.get('python_call_ns', float('nan')), '{:.0f}')} ns for an empty Python call "
        "(marker page in use: "
        f"{'yes' if m.get('wipeonfork_marker') else 'no - getpid() fallback, on every checkout'}"
        ") - and a type check for stand-ins.\n"
        "- **Nothing on checkin.** forkguard has no `reset` listener: SQLAlchemy builds a "
        "`PoolResetState` and dispatches on every checkin once any exists "
        f"({reset_listener_md(doc)}), and it would only have covered a "
        "connection checked out across a fork that ran no hook and returned before any checkout, "
        "ORM execute or garbage collection - while a `Connection` inside a transaction rolls back "
        "through the dialect before the pool's reset anyway (README, *Known limits*).\n",
    ]


def _bytecodes_md(doc: dict[str, Any], owner: str) -> str:
    """What the opcode trace of one bare checkout says about ``owner``'s share, if recorded."""
    counts = [
        b["bytecodes"] for b in doc.get("hotpath", {}).get("bare", {}).values() if "bytecodes" in b
    ]
    if not counts:
        return ""
    c = counts[0]
    if owner == "sqlalchemy":
        added = c["noop-checkout"]["sqlalchemy"] - c["unguarded"]["sqlalchemy"]
        return (
            f": {added} more of SQLAlchemy's bytecodes per checkout, on "
            f"{c['unguarded']['total']} in all without a listener, counted by an opcode trace"
        )
    return (
        f": {c['forkguard']['forkguard']} bytecodes per checkout by the same count (the "
        f"do-nothing listener: {c['noop-checkout']['benchmark']})"
    )


def _dispatch_share_md(doc: dict[str, Any]) -> str:
    split = doc.get("instructions", {}).get("split", {})
    dispatch, own = split.get("checkout_dispatch"), split.get("forkguard_own")
    if not dispatch or own is None:
        return ""
    return f": {100 * dispatch / (dispatch + own):.0f} % of the instructions added in this run"


def _instructions_md(doc: dict[str, Any]) -> str:
    ins = doc.get("instructions", {})
    if "skipped" in ins:
        return f"Instruction counts: skipped ({ins['skipped']}).\n"
    if not instruction_rows(doc):
        return ""
    return (
        "The same split in instructions, counted by valgrind's callgrind: each configuration "
        f"runs {ins['small']} and then {ins['large']} bare checkouts in a fresh process "
        "(same warm-up, `PYTHONHASHSEED=0`, the cyclic GC paused in the counted loop), "
        "callgrind counting only the loop (it runs inside `functools.reduce`: "
        "`--collect-atstart=no --toggle-collect=functools_reduce`, so start-up work that "
        "differs between starts is not counted), and the difference divided by the "
        "difference in checkouts is one checkout + checkin; "
        f"{ins.get('repeats', 1)} repeats, each under a different environment size, give the "
        "median and (in parentheses) the range. Unlike CPU time, these counts do not move with "
        "the machine's load.\n\n" + md_table(INSTRUCTION_HEADER, instruction_rows(doc)) + "\n"
    )


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


def clients_md(doc: dict[str, Any]) -> str:
    rows = client_rows(doc)
    if not rows:
        return ""
    cfg = doc["clients"]["config"]
    return (
        "## 1c. HTTP clients: requests through a keep-alive `requests.Session`\n\n"
        "The hot path's method again (one process, `install()` / `uninstall()` between "
        f"{cfg.get('rounds')} interleaved rounds, paired per-round ratios, wall time) on one "
        "`requests.Session` calling a private HTTPS echo server on 127.0.0.1 (TLS, keep-alive). "
        "forkguard's urllib3 adapter runs only when urllib3 opens a connection; the harness "
        "checks before every round that the adapter is in place exactly when forkguard is "
        "installed, and at the end that the server saw one connection in all (every request "
        f"reused it). Target: with / without >= {CLIENT_RPS_TARGET}.\n\n"
        + md_table(CLIENTS_HEADER, rows)
        + "\n"
    )


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


def _fork_section(doc: dict[str, Any]) -> list[str]:
    fcfg = doc.get("forkcost", {}).get("config", {})
    return [
        "## 2. Fork cost: first working connection in the child\n",
        f"{fcfg.get('rounds')} interleaved rounds per server. The parent holds one pooled "
        "connection, forks; the clock runs from just before `os.fork()` in the parent to the "
        "child's first `SELECT 1` answered (forkguard's at-fork hook runs inside `os.fork()`, so a "
        "child-side clock would hide it). *manual*: forkguard not installed, the child calls "
        "`engine.dispose(close=False)` itself (SQLAlchemy's recipe; note that with mysqlclient "
        "the dropped connection's dealloc sends `COM_QUIT` over the parent's socket - the harness "
        "gives the parent a fresh connection every round). *forkguard*: the child does nothing.\n",
        md_table(FORK_HEADER, fork_rows(doc)),
        "",
        "Both are dominated by opening a new connection (TCP + authentication); forkguard adds "
        "neutralizing the inherited socket (`dup2` onto `/dev/null` after an (st_dev, st_ino) "
        "check), swapping a stand-in into the pool record and giving the engine a fresh pool; "
        "then, as for every new connection in any process, its `connect` listener records the "
        "new connection (a short stack walk for the line that opened it, an `fstat` of its "
        "socket).\n",
    ]


def _prefork_section(doc: dict[str, Any]) -> list[str]:
    pcfg = doc.get("prefork", {}).get("config", {})
    app = shared.app_md(pcfg)
    return [
        "## 3-4. Preload vs lazy: memory, start-up, respawn, throughput\n",
        f"{app[0].upper()}{app[1:]} ({pcfg.get('driver_url')}), under "
        f"{' and '.join(pcfg.get('servers', []))} "
        f"with {', '.join(map(str, pcfg.get('workers', [])))} sync workers; load: "
        f"{shared.LOAD_CLIENT}: first "
        f"{pcfg.get('first_load_requests_per_worker')} requests per worker; then, after the full "
        f"collections, {settling_md(pcfg)}; then (*warm*) {pcfg.get('load_seconds')} s. "
        f"{shared.TOTAL_PSS} Details, the method and the `freeze_gc` story: "
        "[memory.md](memory.md).\n",
        *all_runs_tables(doc),
        "",
        shared.dispose_md(doc),
        COW_MD,
        md_table(COW_HEADER, cow_rows(doc)),
        "",
        f"![memory](img/{IMG_MEMORY})\n",
        "Memory, start-up and respawn: one server run per cell (respawn: median of "
        f"{pcfg.get('respawns')} kills). Throughput: the {shared.variant_count_md(doc)} servers "
        "of a cell run side by side and the load is interleaved between them in rotating rounds "
        f"({pcfg.get('first_load_rounds')} for the first load, {pcfg.get('load_rounds')} for "
        f"the warm one's {pcfg.get('load_seconds')} s, each rounded up to a multiple of the "
        f"servers). {shared.first_load_md(doc)} " + shared.same_cores_md(doc),
        shared.pooling_md(doc),
        shared.throughput_noise_md(doc),
        respawn_floor_md(doc),
    ]
