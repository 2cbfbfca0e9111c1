"""The in-process tables - hot path, bare checkout, instructions, ORM path, fork cost - as
header + rows of strings, shared by the terminal summary and the pages.

Every cell comes from ``results.json`` through :mod:`.figures`; the pre-fork server tables are
in :mod:`.server_tables`.
"""

from __future__ import annotations

from typing import Any

from .figures import fmt, orm_case, ratio
from .orm import CASES
from .terms import FLOOR

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
BARE_HEADER = (
    "backend",
    "unguarded CPU ns",
    "forkguard CPU ns",
    "added CPU ns",
    f"of which: the floor, {FLOOR}",
    "forkguard's own code",
)
INSTRUCTION_HEADER = (
    "backend",
    "unguarded instructions",
    "forkguard instructions",
    "added",
    f"of which: the floor, {FLOOR}",
    "forkguard's own code",
    "forkguard's share",
)
FORK_HEADER = ("backend", "manual dispose(close=False)", "forkguard", "ratio", "difference ms")
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


def ratio_cell(r: dict[str, float]) -> str:
    """A paired ratio as ``median (Q1-Q3)``."""
    return f"{fmt(r['median'], '{:.3f}')} ({fmt(r['q1'], '{:.3f}')}-{fmt(r['q3'], '{:.3f}')})"


def hotpath_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for backend, q in doc.get("hotpath", {}).get("query", {}).items():
        ns, cpu = q["ns"], q.get("cpu", {})
        rows.append(
            [
                backend,
                fmt(ns["unguarded"]["median"] / 1000, "{:.1f}"),
                fmt(ns["forkguard"]["median"] / 1000, "{:.1f}"),
                ratio_cell(q["ratio_forkguard"]),
                fmt(q["added_ns"]["median"], "{:+.0f}"),
                fmt(cpu.get("ns", {}).get("unguarded", {}).get("median", nan) / 1000, "{:.1f}"),
                fmt(cpu.get("ratio_forkguard", {}).get("median", nan), "{:.3f}"),
                fmt(cpu.get("added_ns", {}).get("median", nan), "{:+.0f}"),
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
                fmt(ns["unguarded"]["median"], "{:.0f}"),
                fmt(ns["forkguard"]["median"], "{:.0f}"),
                fmt(b["added_ns"]["median"], "{:+.0f}"),
                fmt(split.get("checkout_dispatch", {}).get("median", nan), "{:+.0f}"),
                fmt(split.get("forkguard_own", {}).get("median", nan), "{:+.0f}"),
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
        text = fmt(split[key], "{:+,.0f}")
        if key in spread and ins.get("repeats", 1) > 1:
            text += f" ({fmt(spread[key][0], '{:+,.0f}')} to {fmt(spread[key][1], '{:+,.0f}')})"
        return text

    return [
        [
            ins["backend"],
            fmt(per_op["unguarded"], "{:,.0f}"),
            fmt(per_op["forkguard"], "{:,.0f}"),
            cell("added"),
            cell("checkout_dispatch"),
            cell("forkguard_own"),
            fmt(ratio(split["forkguard_own"], split["added"]) * 100, "{:.0f} %"),
        ]
    ]


def fork_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [
            backend,
            fmt(f["ms"]["manual"]["median"], "{:.2f}"),
            fmt(f["ms"]["forkguard"]["median"], "{:.2f}"),
            fmt(f["ratio_forkguard"]["median"], "{:.2f}"),
            fmt(f["added_ms"], "{:+.2f}"),
        ]
        for backend, f in doc.get("forkcost", {}).get("backends", {}).items()
    ]


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
                ratio_cell(a["ratio"]["forkguard"]),
                fmt(a["added_ns"]["forkguard"]["median"], "{:+.0f}"),
                fmt(other["ratio"]["forkguard"]["median"], "{:.3f}"),
                ratio_cell(a["ratio"]["noop-orm"]),
                ratio_cell(a["ratio"]["forkguard-orm-check"]),
                fmt(a["orm_check_own_ns"]["median"], "{:+.0f}"),
            ]
        )
    return rows


CLIENTS_HEADER = (
    "client (keep-alive, private HTTPS server)",
    "requests / s without",
    "with / without (requests per second)",
    "client CPU per request, with / without",
)


def client_rows(doc: dict[str, Any]) -> list[list[str]]:
    res = doc.get("clients")
    if not res or "rps_ratio" not in res:
        return []
    unguarded_ns = res["wall_ns"]["unguarded"]["median"]
    return [
        [
            f"{res['client']} Session, {res['config']['requests_per_round']} GETs per round",
            fmt(1e9 / unguarded_ns if unguarded_ns else float("nan"), "{:.0f}"),
            ratio_cell(res["rps_ratio"]),
            ratio_cell(res["cpu_ratio"]),
        ]
    ]
