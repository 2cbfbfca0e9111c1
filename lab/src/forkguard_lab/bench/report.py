"""Turn ``results.json`` into the terminal table, the PNG charts and the two docs pages.

Everything printed or written is computed from the JSON alone (figures in :mod:`.figures`,
targets in :mod:`.targets`, the newer sections' words in :mod:`.prose`), so the docs can be
regenerated from a stored run: ``make docs`` renders them, and the README's bench block, from
the committed ``docs/data/results.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Optional

from . import prose
from . import readme as readme_block
from .figures import (
    cells,
    find_run,
    md_table,
    orm_case,
    per_request,
    prefork_ratios,
    respawn_parts,
    variants_in,
)
from .figures import fmt as _f
from .figures import mb as _mb
from .figures import mem as _mem
from .figures import ratio as _ratio
from .figures import runs_of as _runs
from .machine import one_line
from .prefork import VARIANT_LABELS
from .targets import HOT_TARGET, TARGET_HEADER, target_rows, targets

__all__ = [
    "benchmarks_md",
    "charts",
    "cow_rows",
    "md_table",
    "memory_md",
    "prefork_ratios",
    "target_rows",
    "targets",
    "terminal",
    "write_docs",
]

log = logging.getLogger("forkguard_lab.bench")

TIMES = "\u00d7"
nan = float("nan")
HOT_HEADER = (
    "server",
    "unguarded µs/op",
    "forkguard µs/op",
    "ratio (Q1-Q3)",
    "ns added",
    "client CPU µs/op",
    "client CPU ratio",
    "client CPU ns added",
)
DATA_JSON = "data/results.json"  # under the docs directory
IMG_OVERVIEW = "bench-overview.png"
IMG_MEMORY = "bench-memory.png"


# ---- text ----------------------------------------------------------------------------------


def hotpath_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    hot = doc.get("hotpath", {})
    for backend, q in hot.get("query", {}).items():
        ns = q["ns"]
        r = q["ratio_forkguard"]
        rows.append(
            [
                backend,
                _f(ns["unguarded"]["median"] / 1000, "{:.1f}"),
                _f(ns["forkguard"]["median"] / 1000, "{:.1f}"),
                f"{_f(r['median'], '{:.3f}')} ({_f(r['q1'], '{:.3f}')}-{_f(r['q3'], '{:.3f}')})",
                _f(q["added_ns"]["median"], "{:+.0f}"),
                _f(
                    q.get("cpu", {}).get("ns", {}).get("unguarded", {}).get("median", nan) / 1000,
                    "{:.1f}",
                ),
                _f(q.get("cpu", {}).get("ratio_forkguard", {}).get("median", nan), "{:.3f}"),
                _f(q.get("cpu", {}).get("added_ns", {}).get("median", nan), "{:+.0f}"),
            ]
        )
    return rows


def bare_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, b in doc.get("hotpath", {}).get("bare", {}).items():
        ns = b["ns"]
        split = b.get("split_ns", {})
        rows.append(
            [
                backend,
                _f(ns["unguarded"]["median"], "{:.0f}"),
                _f(ns["forkguard"]["median"], "{:.0f}"),
                _f(b["added_ns"]["median"], "{:+.0f}"),
                _f(split.get("checkout_dispatch", {}).get("median", float("nan")), "{:+.0f}"),
                _f(split.get("forkguard_own", {}).get("median", float("nan")), "{:+.0f}"),
            ]
        )
    return rows


def instruction_rows(doc: dict[str, Any]) -> list[list[str]]:
    ins = doc.get("instructions", {})
    if "per_op" not in ins:
        return []
    per_op, split = ins["per_op"], ins["split"]
    spread = ins.get("split_range", {})

    def cell(key: str) -> str:
        text = _f(split[key], "{:+,.0f}")
        if key in spread and ins.get("repeats", 1) > 1:
            text += f" ({_f(spread[key][0], '{:+,.0f}')} to {_f(spread[key][1], '{:+,.0f}')})"
        return text

    return [
        [
            ins["backend"],
            _f(per_op["unguarded"], "{:,.0f}"),
            _f(per_op["forkguard"], "{:,.0f}"),
            cell("added"),
            cell("checkout_dispatch"),
            cell("forkguard_own"),
            _f(_ratio(split["forkguard_own"], split["added"]) * 100, "{:.0f} %"),
        ]
    ]


def fork_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, f in doc.get("forkcost", {}).get("backends", {}).items():
        rows.append(
            [
                backend,
                _f(f["ms"]["manual"]["median"], "{:.2f}"),
                _f(f["ms"]["forkguard"]["median"], "{:.2f}"),
                _f(f["ratio_forkguard"]["median"], "{:.2f}"),
                _f(f["added_ms"], "{:+.2f}"),
            ]
        )
    return rows


def memory_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in _runs(doc):
        label = VARIANT_LABELS.get(run["variant"], run["variant"])
        if run.get("error"):
            failed = [run["server"], str(run["workers"]), label, f"failed: {run['error'][:60]}"]
            rows.append(failed + [""] * (len(MEMORY_HEADER) - len(failed)))
            continue
        mem = run["memory"]
        rows.append(
            [
                run["server"],
                str(run["workers"]),
                label,
                _mb(mem["ready"]["pss_kb"]),
                _mb(mem["load"]["pss_kb"]),
                _mb(mem["gc"]["pss_kb"]),
                _mb(mem["gc"]["uss_kb"]),
                _mb(mem["warm"]["pss_kb"]) if "warm" in mem else "n/a",
                _f(run["startup_s"], "{:.2f}"),
                _f(
                    run["respawn_median_s"]
                    if run["respawn_median_s"] is not None
                    else float("nan"),
                    "{:.2f}",
                ),
                _f(respawn_parts(run)[0], "{:.2f}"),
                _f(run["throughput_rps"], "{:.0f}"),
                _f(run.get("warm_throughput_rps", nan), "{:.0f}"),
            ]
        )
    return rows


def cow_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Copy-on-write and CPU per request, per run: what is left of preloading's first touches
    in each phase, and what the warm load cost the workers."""
    rows = []
    for run in _runs(doc):
        if run.get("error"):
            continue
        warm_requests = run.get("warm_requests", 0)
        first_requests = run["load_requests"] - run.get("settle_requests", 0) - warm_requests
        slices = run.get("settle_faults_per_request") or []
        if "settle_s" not in run:
            settling = "n/a"
        else:
            settling = _f(run["settle_s"], "{:.0f}") + ("" if run.get("settled") else " (cap)")
        rows.append(
            [
                run["server"],
                str(run["workers"]),
                VARIANT_LABELS.get(run["variant"], run["variant"]),
                _f(per_request(run["load_minor_faults"], first_requests), "{:.1f}"),
                settling,
                f"{slices[0]:.1f} -> {slices[-1]:.2f}" if slices else "n/a",
                _f(per_request(run.get("warm_minor_faults", nan), warm_requests), "{:.2f}"),
                _f(per_request(run.get("warm_user_s", nan) * 1e6, warm_requests), "{:.0f}"),
                _f(per_request(run.get("warm_system_s", nan) * 1e6, warm_requests), "{:.0f}"),
            ]
        )
    return rows


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


def ratio_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["server"],
            str(r["workers"]),
            VARIANT_LABELS[r["variant"]],
            _f(r["pss_ready"]),
            _f(r["pss_load"]),
            _f(r["pss_gc"]),
            _f(r["pss_warm"]),
            _f(r["workers_pss_ready"]),
            _f(r["startup"]),
            _f(r["respawn"]),
            _f(r["respawn_after_fork"]),
            _f(r["throughput"]),
            _f(r["warm_throughput"]),
            _f(r["warm_cpu_per_request"]),
        ]
        for r in prefork_ratios(doc)
    ]


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


def terminal(doc: dict[str, Any]) -> str:
    """A plain-text summary (markdown tables read fine in a terminal)."""
    parts = [f"forkguard bench: {doc.get('command')}", one_line(doc.get("machine", {}))]
    if doc.get("hotpath"):
        parts += [
            "",
            "Hot path: checkout + SELECT 1 + checkin (us per op, median; ratio median (Q1-Q3))",
            md_table(HOT_HEADER, hotpath_rows(doc)),
            "",
            "Bare checkout + checkin, no query (ns per op)",
            md_table(BARE_HEADER, bare_rows(doc)),
            _micro_line(doc),
        ]
    if instruction_rows(doc):
        parts += [
            "",
            "Instructions per bare checkout + checkin (callgrind)",
            md_table(INSTRUCTION_HEADER, instruction_rows(doc)),
        ]
    if doc.get("orm"):
        parts += [
            "",
            "ORM path: Session.execute(select(Model).where(Model.id == 1)), ratios median (Q1-Q3)",
            md_table(prose.ORM_HEADER, prose.orm_rows(doc)),
        ]
    if doc.get("forkcost"):
        parts += [
            "",
            "First working connection after fork (ms)",
            md_table(FORK_HEADER, fork_rows(doc)),
        ]
    if doc.get("prefork"):
        parts += [
            "",
            "Preload vs lazy (absolute)",
            md_table(MEMORY_HEADER, memory_rows(doc)),
            "",
            "Preload vs lazy (ratios to lazy)",
            md_table(RATIO_HEADER, ratio_rows(doc)),
            "",
            "forkguard vs dispose(close=False) in a post-fork hook (and vs lazy)",
            prose.dispose_table(doc),
        ]
    parts += ["", "Targets", md_table(TARGET_HEADER, target_rows(doc))]
    parts.append(
        f"load average at start {doc.get('machine', {}).get('load_at_start')}, at end "
        f"{doc.get('load_at_end')}; took {_f(doc.get('duration_s', float('nan')), '{:.0f}')} s"
    )
    return "\n".join(parts)


BARE_HEADER = (
    "backend",
    "unguarded CPU ns",
    "forkguard CPU ns",
    "added CPU ns",
    "of which: the floor, SQLAlchemy's slow path for any checkout listener",
    "forkguard's own code",
)
INSTRUCTION_HEADER = (
    "backend",
    "unguarded instructions",
    "forkguard instructions",
    "added",
    "of which: the floor, SQLAlchemy's slow path for any checkout listener",
    "forkguard's own code",
    "forkguard's share",
)
FORK_HEADER = ("backend", "manual dispose(close=False)", "forkguard", "ratio", "difference ms")


def _micro_line(doc: dict[str, Any]) -> str:
    m = doc.get("hotpath", {}).get("micro", {})
    if not m:
        return ""
    return (
        f"one fork check (forkguard._fork.check): {_f(m['fork_check_ns'], '{:.0f}')} ns "
        f"(MADV_WIPEONFORK marker: {'yes' if m['wipeonfork_marker'] else 'no, getpid()'}); "
        f"os.getpid(): {_f(m['getpid_ns'], '{:.0f}')} ns; an empty Python call: "
        f"{_f(m['python_call_ns'], '{:.0f}')} ns"
    )


# ---- charts --------------------------------------------------------------------------------


def charts(doc: dict[str, Any], img_dir: str) -> list[str]:
    """Write the PNG charts (matplotlib, Agg); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(img_dir, exist_ok=True)
    written: list[str] = []
    hot = doc.get("hotpath", {})
    fork = doc.get("forkcost", {}).get("backends", {})
    if hot or fork or doc.get("orm"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), width_ratios=(2, 1))
        ax = axes[0]
        labels, values, errs = [], [], []
        for kind, name in (("query", "SELECT 1"), ("bare", "bare checkout")):
            for backend, res in hot.get(kind, {}).items():
                r = res["ratio_forkguard"]
                labels.append(f"{backend}\n{name}")
                values.append(r["median"])
                errs.append([[r["median"] - r["q1"]], [r["q3"] - r["median"]]])
        for case in doc.get("orm", {}).get("cases", {}):
            analysis = orm_case(doc, case)
            if analysis is not None:
                r = analysis["ratio"]["forkguard"]
                labels.append(f"ORM\n{case}")
                values.append(r["median"])
                errs.append([[r["median"] - r["q1"]], [r["q3"] - r["median"]]])
        for i, (v, e) in enumerate(zip(values, errs)):
            ax.bar(i, v, color="#4477aa", yerr=e, capsize=4)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(
            HOT_TARGET, color="#cc3311", linestyle="--", linewidth=1, label=f"target {HOT_TARGET}"
        )
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel("guarded / unguarded (median, Q1-Q3)")
        ax.set_title("Pool hot path and ORM path (forkguard as installed)", fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[1]
        backends = list(fork)
        for j, variant in enumerate(("manual", "forkguard")):
            ax.bar(
                [i + 0.4 * j for i in range(len(backends))],
                [fork[b]["ms"][variant]["median"] for b in backends],
                width=0.4,
                label="dispose(close=False) by hand" if variant == "manual" else "forkguard",
                color="#bbbbbb" if variant == "manual" else "#4477aa",
            )
        ax.set_xticks([i + 0.2 for i in range(len(backends))], backends)
        ax.set_ylabel("ms, fork() to first SELECT 1 in the child")
        ax.set_title("First working connection after fork", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(img_dir, IMG_OVERVIEW)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    cell_list = cells(doc)
    if cell_list:
        fig, axes = plt.subplots(
            1, len(cell_list), figsize=(3.6 * len(cell_list), 3.8), squeeze=False
        )
        colors = {
            "lazy": "#bbbbbb",
            "forkguard": "#4477aa",
            "forkguard-freeze": "#228833",
            "dispose": "#ccbb44",
        }
        for ax, (server, workers) in zip(axes[0], cell_list):
            here = variants_in(doc, server, workers)
            width = 0.8 / max(1, len(here))
            for j, variant in enumerate(here):
                run = find_run(doc, server, workers, variant)
                ax.bar(
                    [i + width * j for i in range(3)],
                    [_mem(run, p) / 1024 for p in ("ready", "load", "gc")],
                    width=width,
                    color=colors[variant],
                    label=VARIANT_LABELS[variant],
                )
            middle = width * (len(here) - 1) / 2
            ax.set_xticks(
                [i + middle for i in range(3)], ["ready", "after load", "after full GC"], fontsize=8
            )
            ax.set_title(f"{server}, {workers} workers", fontsize=10)
            ax.set_ylabel("total PSS, master + workers (MB)")
        # The legend of the cell with the most variants names them all.
        widest = max(range(len(cell_list)), key=lambda i: len(variants_in(doc, *cell_list[i])))
        handles, labels = axes[0][widest].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        path = os.path.join(img_dir, IMG_MEMORY)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---- docs ----------------------------------------------------------------------------------


def _machine_md(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    pk = m.get("packages", {})
    servers = doc.get("hotpath", {}).get("query", {})
    lines = [
        f"- CPU: {m.get('cpu')}, {m.get('cores_usable')} cores usable, "
        f"{m.get('mem_total_mb')} MB RAM",
        f"- {m.get('kernel')}, {m.get('python')}",
        # Sorted: results.json is written with sorted keys, so a page regenerated from it
        # reads the same as the one the run wrote.
        "- " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items())),
    ]
    for backend, q in servers.items():
        lines.append(f"- {backend} server: {str(q.get('server_version', '')).split(',')[0]}")
    lines.append(
        "- load average (1/5/15 min) at start: "
        f"{' / '.join(map(str, m.get('load_at_start', [])))}, "
        f"at end: {' / '.join(map(str, doc.get('load_at_end', [])))} - the machine is shared"
    )
    lines.append(
        f"- run {m.get('date')}, forkguard at commit {m.get('git_commit')}, "
        f"took {_f(doc.get('duration_s', float('nan')), '{:.0f}')} s"
    )
    if len(doc.get("pool") or []) > 1:
        lines.append(
            f"- throughput pooled over {len(doc['pool'])} full runs: "
            + ", ".join(f"{e.get('label')} ({e.get('date')})" for e in doc["pool"])
        )
    return "\n".join(lines)


def _header(doc: dict[str, Any], title: str) -> str:
    return (
        f"# {title}\n\n"
        "<!-- Generated by lab/src/forkguard_lab/bench/report.py from results.json; "
        "do not edit by hand. -->\n\n"
        f"Produced by **`{doc.get('command')}`** "
        "(`make bench` runs `.venv/bin/python -m forkguard_lab.bench --runs 3`). "
        "The run's results are "
        f"committed as [docs/{DATA_JSON}]({DATA_JSON}) (the raw per-round samples left out); "
        "`make docs` regenerates this page, the other one and the README's figures from it.\n\n"
        f"{_machine_md(doc)}\n"
    )


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


def _settling_md(pcfg: dict[str, Any]) -> str:
    if "settle_faults_per_request" not in pcfg:
        return "no settling (this run predates it)"
    return (
        "each server loaded alone until its workers take at most "
        f"{pcfg['settle_faults_per_request']} minor faults per request over a "
        f"{pcfg['settle_slice_s']:.0f} s slice (*settling*, at most {pcfg['settle_max_s']:.0f} s)"
    )


COW_MD = (
    "Copy-on-write is not over after the full collections: they write only to GC-tracked "
    "objects (their GC headers), and a page that holds untracked objects alone - strs, "
    "floats, ints - stays shared until a request first bumps a reference count on one of "
    "them; then the worker copies it. Each copy is a minor fault and kernel time, which a "
    "lazy-apps worker never pays (it built its heap before it counted as ready). So before the "
    "warm load each server is loaded alone until those faults have died down (*settling*); "
    "the table shows what was left in each phase and what a request cost the workers in the "
    "warm load (CPU time from `/proc/PID/stat`, whole workers: the app, the server and the "
    "kernel).\n"
)


def _respawn_floor_md(doc: dict[str, Any]) -> str:
    """Why uWSGI's respawn ratio has a floor, with this run's split of the respawn time."""
    text = (
        "Respawn under uWSGI has a floor that is uWSGI's, not preloading's: its master looks for "
        "dead workers once per `check-interval` (1 s, whole seconds only; SIGCHLD stays at its "
        "default, ignored, and no worker has an fd in its event queue, so a death does not "
        "wake it), so a preloaded worker that forks in milliseconds still "
        "waits up to a second to be forked; gunicorn's arbiter reacts to SIGCHLD at once."
    )
    rows = []
    for r in prefork_ratios(doc):
        if r["variant"] != "forkguard" or math.isnan(r["respawn_after_fork"]):
            continue
        (fork_p, after_p), (fork_l, after_l) = r["respawn_parts"]
        rows.append(
            f"{r['server']} x{r['workers']}: until the fork {_f(fork_p)} s preloaded / "
            f"{_f(fork_l)} s lazy, then serving after {_f(after_p, '{:.3f}')} s / "
            f"{_f(after_l)} s ({_f(r['respawn_after_fork'], '{:.3f}')}x)"
        )
    if rows:
        if doc.get("prefork", {}).get("config", {}).get("kill_schedule") == "master-cycle":
            spread = (
                " The kills are spread evenly over the master's cycle, which restarts when it "
                "forks a replacement: after one uncounted kill to find it, the i-th of n kills "
                "comes (i + 0.5) / n of a cycle after a tick - the first such moment after the "
                "workers are back - so every variant waits half a cycle on average, as a worker "
                "dying at a random moment would. "
            )
        else:
            spread = (
                " The kills are spaced (i + 0.5) / n of a second after the workers are back "
                "(so where a variant's start-up ends in the master's cycle moves its wait). "
            )
        text += (
            spread
            + "The respawn time splits into the server's reaction (kill until the master has "
            "forked the replacement, polled every millisecond) and the new worker's start "
            "(fork until it answers), which is the part preloading changes: "
            + "; ".join(rows)
            + "."
        )
    return text + "\n"


def _instructions_md(doc: dict[str, Any]) -> str:
    ins = doc.get("instructions", {})
    if "skipped" in ins:
        return f"Instruction counts: skipped ({ins['skipped']}).\n"
    if not instruction_rows(doc):
        return ""
    return (
        "The same split in instructions, counted by valgrind's callgrind: each configuration "
        f"runs {ins['small']} and then {ins['large']} bare checkouts in a fresh process "
        "(same warm-up, `PYTHONHASHSEED=0`, the cyclic GC paused in the counted loop), and the "
        "difference divided by the difference in checkouts is one checkout + checkin; "
        f"{ins.get('repeats', 1)} repeats, each under a different environment size, give the "
        "median and (in parentheses) the range. Unlike CPU time, these counts do not move with "
        "the machine's load.\n\n" + md_table(INSTRUCTION_HEADER, instruction_rows(doc)) + "\n"
    )


def benchmarks_md(doc: dict[str, Any]) -> str:
    sections = [_bench_intro(doc), _hot_sections(doc), [prose.orm_md(doc)]]
    sections += [_fork_section(doc), _prefork_section(doc)]
    return "\n".join(part for section in sections for part in section)


def _bench_intro(doc: dict[str, Any]) -> list[str]:
    return [
        _header(doc, "Benchmarks"),
        "Every figure is a ratio of two things measured side by side in this one run; timings are "
        "medians over interleaved rounds (each round runs every configuration back to back, in an "
        "order rotated every round). Ratios are the median of the per-round ratios, with the "
        "quartiles in parentheses.\n",
        "## Targets\n",
        md_table(TARGET_HEADER, target_rows(doc)),
        "",
        f"![hot path and fork cost](img/{IMG_OVERVIEW})\n",
    ]


def _hot_sections(doc: dict[str, Any]) -> list[str]:
    hot = doc.get("hotpath", {})
    cfg = hot.get("config", {})
    m = hot.get("micro", {})
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
        prose.checkout_md(doc),
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
        f"same page, {_f(m.get('fork_check_ns', float('nan')), '{:.0f}')} ns per call here, "
        f"against {_f(m.get('getpid_ns', float('nan')), '{:.0f}')} ns for `os.getpid()` and "
        f"{_f(m.get('python_call_ns', float('nan')), '{:.0f}')} ns for an empty Python call "
        "(marker page in use: "
        f"{'yes' if m.get('wipeonfork_marker') else 'no - getpid() fallback, on every checkout'}"
        ") - and a type check for stand-ins.\n"
        "- **Nothing on checkin.** forkguard has no `reset` listener: SQLAlchemy builds a "
        "`PoolResetState` and dispatches on every checkin once any exists "
        f"({prose.reset_listener_md(doc)}), and it would only have covered a "
        "connection checked out across a fork that ran no hook and returned before any checkout, "
        "ORM execute or garbage collection - while a `Connection` inside a transaction rolls back "
        "through the dialect before the pool's reset anyway (README, *Known limits*).\n",
    ]


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
    return [
        "## 3-4. Preload vs lazy: memory, start-up, respawn, throughput\n",
        f"A Flask-SQLAlchemy app building ~{_f(pcfg.get('mb', float('nan')), '{:.0f}')} MB of "
        f"GC-tracked rows at import ({pcfg.get('driver_url')}), under "
        f"{' and '.join(pcfg.get('servers', []))} "
        f"with {', '.join(map(str, pcfg.get('workers', [])))} sync workers; load: the lab's load "
        "client (echo / read / write through the database): first "
        f"{pcfg.get('first_load_requests_per_worker')} requests per worker; then, after the full "
        f"collections, {_settling_md(pcfg)}; then (*warm*) {pcfg.get('load_seconds')} s. Total "
        "PSS is master + workers. "
        "Details, the method and the `freeze_gc` story: "
        "[memory.md](memory.md).\n",
        md_table(MEMORY_HEADER, memory_rows(doc)),
        "",
        md_table(RATIO_HEADER, ratio_rows(doc)),
        "",
        prose.dispose_md(doc),
        COW_MD,
        md_table(COW_HEADER, cow_rows(doc)),
        "",
        f"![memory](img/{IMG_MEMORY})\n",
        "Memory, start-up and respawn: one server run per cell (respawn: median of "
        f"{pcfg.get('respawns')} kills). Throughput: the {prose.variant_count_md(doc)} servers "
        "of a cell run side by side and the load is interleaved between them in rotating rounds "
        f"({pcfg.get('first_load_rounds')} for the first load, {pcfg.get('load_rounds')} for "
        f"the warm one's {pcfg.get('load_seconds')} s, each rounded up to a multiple of the "
        "servers); the ratio is the median of the per-round ratios. "
        "*First load* runs right "
        "after start-up, when a preloaded worker still takes a copy-on-write fault on its first "
        "write to each shared page (the minor-faults columns) - a cost a lazy-apps worker paid "
        "while importing, before it counted as ready, so the first load is shown but is not the "
        "throughput target; *warm* runs the same load after the full collections and once "
        "copy-on-write has settled: steady state, like with like, and the figure the target is "
        "on. " + prose.same_cores_md(doc),
        prose.pooling_md(doc),
        prose.throughput_noise_md(doc),
        _respawn_floor_md(doc),
    ]


def memory_md(doc: dict[str, Any]) -> str:
    pcfg = doc.get("prefork", {}).get("config", {})
    smallest = min(pcfg.get("workers", [4]) or [4])
    rows4 = [
        r for r in prefork_ratios(doc) if r["workers"] == smallest and r["variant"] != "dispose"
    ]
    why = md_table(
        (
            "server",
            "variant, vs lazy-apps",
            "memory at ready",
            "after load",
            "after load + full GC",
            "start-up",
            "respawn",
            "req/s first load",
            "req/s warm",
        ),
        [
            [
                r["server"],
                VARIANT_LABELS[r["variant"]],
                _f(r["pss_ready"]) + TIMES,
                _f(r["pss_load"]) + TIMES,
                _f(r["pss_gc"]) + TIMES,
                _f(r["startup"]) + TIMES,
                _f(r["respawn"]) + TIMES,
                _f(r["throughput"]) + TIMES,
                _f(r["warm_throughput"]) + TIMES,
            ]
            for r in rows4
        ],
    )
    n = rows4[0]["workers"] if rows4 else "?"
    parts = [
        _header(doc, "Memory: why preload, and `freeze_gc`"),
        "## Why preload?\n",
        f"{n} workers, an app holding ~{_f(pcfg.get('mb', float('nan')), '{:.0f}')} MB at import; "
        "every figure is preload (fixed by forkguard) divided by lazy-apps / gunicorn without "
        "`--preload` - the usual workaround for the fork problem - measured in the same run. "
        "Memory is total PSS of master + workers.\n",
        why,
        "",
        "Preloading imports the app once in the master; the workers share its pages copy-on-write, "
        "start without importing anything, and a killed worker is replaced by a fork instead of a "
        "fresh import. lazy-apps gives all of that up to avoid sharing database connections - "
        "forkguard makes the sharing safe instead.\n",
        "Throughput is measured twice, each time interleaved between the "
        f"{prose.variant_count_md(doc)} servers of a cell: right "
        "after start-up (*first load*) and again after the full collections, once copy-on-write "
        "has settled (*warm*). In the "
        "first load a preloaded worker pays a minor page fault and a page copy"
        f"{prose.page_md(doc)} the first time "
        "it writes to each shared page (a reference count is enough) - the *minor faults* "
        "columns below count them; lazy workers wrote their pages while importing. Once those "
        "first touches are behind, the warm figure compares like with like.\n",
        prose.dispose_md(doc),
        COW_MD,
        prose.pooling_md(doc),
        prose.throughput_noise_md(doc),
        _respawn_floor_md(doc),
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
        "## All runs\n",
        md_table(MEMORY_HEADER, memory_rows(doc)),
        "",
        md_table(RATIO_HEADER, ratio_rows(doc)),
        "",
        md_table(COW_HEADER, cow_rows(doc)),
        "",
        f"![memory](img/{IMG_MEMORY})\n",
        "## How it is measured\n",
        "- App: `forkguard_lab/bench/memapp.py` - Flask + Flask-SQLAlchemy; at import it builds "
        "rows of `{id, name, score, tags: [..]}` (dicts holding a list: tracked by the cyclic GC, "
        "never untracked) and runs a query with an app context pushed and never popped (the "
        "reported app's style: the master holds a checked-out connection). Every request reads a "
        "random 0.1 % slice of the rows.\n"
        "- Servers: uWSGI `--master --processes N` (`--lazy-apps` for lazy) and gunicorn sync "
        "workers (`--preload` unless lazy), each in its own process group on 127.0.0.1, stopped "
        "(SIGTERM, then SIGKILL to the group) after every run.\n"
        "- *Ready*: every worker has answered a request; start-up is the time from launching the "
        "server to that point. *After load*: the lab's load client (echo, reads, writes), "
        f"{pcfg.get('first_load_requests_per_worker')} requests per worker in "
        f"{pcfg.get('first_load_rounds')} interleaved rounds - a bound in requests, not seconds, "
        "because what the load un-shares grows with the requests each worker served (see "
        "below), whatever the machine's speed. *After full GC*: `/gc` (one `gc.collect()`) "
        f"answered by every worker. *After warm load*: after {_settling_md(pcfg)}, and a further "
        f"{pcfg.get('load_seconds')} s of the same load ({pcfg.get('load_rounds')} interleaved "
        "rounds or the next multiple of the servers, the *warm* throughput). PSS/USS from "
        "`/proc/PID/smaps_rollup` of the master and every worker.\n"
        "- *Reference counts still un-share.* Each request reads a random 0.1 % slice of the "
        "rows, and reading an object writes its reference count: after k requests a worker has "
        "written to about 1 - exp(-k/1000) of the working set's pages "
        f"({prose.refcount_md(pcfg)}). `gc.freeze()` stops the collector's writes, not these; "
        "CPython 3.12's immortal objects cover only built-in singletons. The *after warm load* "
        "column shows where a long-running worker ends up; recycling workers (`max-requests`) "
        "resets it.\n"
        f"- *Respawn*: SIGKILL one worker, time until a new pid answers a database request; "
        f"median of {pcfg.get('respawns')}. uWSGI's master notices a dead worker on its own "
        "cycle, which bounds its preloaded respawn time from below.\n",
    ]
    return "\n".join(parts)


# Per-round samples: summarised in the JSON already, and never read by the pages.
RAW_KEYS = ("raw_ns", "raw_ms")


def slim(value: Any) -> Any:
    """``value`` without its raw per-round samples (the committed copy of a run)."""
    if isinstance(value, dict):
        return {k: slim(v) for k, v in value.items() if k not in RAW_KEYS}
    if isinstance(value, list):
        return [slim(v) for v in value]
    return value


def write_json(doc: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")


def write_docs(doc: dict[str, Any], docs_dir: str, readme: Optional[str] = None) -> list[str]:
    """benchmarks.md, memory.md, img/ and data/results.json (slim) under ``docs_dir``; and the
    README's block between its markers, if ``readme`` is given."""
    os.makedirs(docs_dir, exist_ok=True)
    written = charts(doc, os.path.join(docs_dir, "img"))
    for name, render in (("benchmarks.md", benchmarks_md), ("memory.md", memory_md)):
        if name == "memory.md" and not doc.get("prefork"):
            continue
        path = os.path.join(docs_dir, name)
        with open(path, "w") as fh:
            fh.write(render(doc))
        written.append(path)
    data = os.path.join(docs_dir, DATA_JSON)
    write_json(slim(doc), data)
    written.append(data)
    if readme and readme_block.rewrite(readme, doc):
        written.append(readme)
    return written
