"""The plain-text summary printed after a run (markdown tables read fine in a terminal)."""

from __future__ import annotations

from typing import Any

from .figures import fmt, md_table
from .machine import one_line
from .server_tables import MEMORY_HEADER, RATIO_HEADER, dispose_table, memory_rows, ratio_rows
from .tables import (
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
from .targets import TARGET_HEADER, target_rows
from .terms import FORK_TITLE


def micro_line(doc: dict[str, Any]) -> str:
    """The fork check against ``os.getpid()`` and an empty call, in one line."""
    m = doc.get("hotpath", {}).get("micro", {})
    if not m:
        return ""
    return (
        f"one fork check (forkguard.testing.fork_check): {fmt(m['fork_check_ns'], '{:.0f}')} ns "
        f"(MADV_WIPEONFORK marker: {'yes' if m['wipeonfork_marker'] else 'no, getpid()'}); "
        f"os.getpid(): {fmt(m['getpid_ns'], '{:.0f}')} ns; an empty Python call: "
        f"{fmt(m['python_call_ns'], '{:.0f}')} ns"
    )


def _in_process(doc: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    if doc.get("hotpath"):
        parts += [
            "",
            "Hot path: checkout + SELECT 1 + checkin (us per op, median; ratio median (Q1-Q3))",
            md_table(HOT_HEADER, hotpath_rows(doc)),
            "",
            "Bare checkout + checkin, no query (ns per op)",
            md_table(BARE_HEADER, bare_rows(doc)),
            micro_line(doc),
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
            md_table(ORM_HEADER, orm_rows(doc)),
        ]
    if client_rows(doc):
        parts += [
            "",
            "HTTP client: requests per second",
            md_table(CLIENTS_HEADER, client_rows(doc)),
        ]
    if doc.get("forkcost"):
        parts += ["", f"{FORK_TITLE} (ms)", md_table(FORK_HEADER, fork_rows(doc))]
    return parts


def _prefork(doc: dict[str, Any]) -> list[str]:
    if not doc.get("prefork"):
        return []
    return [
        "",
        "Preload vs lazy (absolute)",
        md_table(MEMORY_HEADER, memory_rows(doc)),
        "",
        "Preload vs lazy (ratios to lazy)",
        md_table(RATIO_HEADER, ratio_rows(doc)),
        "",
        "forkguard vs dispose(close=False) in a post-fork hook (and vs lazy)",
        dispose_table(doc),
    ]


def terminal(doc: dict[str, Any]) -> str:
    """A plain-text summary: the machine, every table, the targets, the load and duration."""
    parts = [f"forkguard bench: {doc.get('command')}", one_line(doc.get("machine", {}))]
    parts += _in_process(doc) + _prefork(doc)
    parts += ["", "Targets", md_table(TARGET_HEADER, target_rows(doc))]
    parts.append(
        f"load average at start {doc.get('machine', {}).get('load_at_start')}, at end "
        f"{doc.get('load_at_end')}; took {fmt(doc.get('duration_s', float('nan')), '{:.0f}')} s"
    )
    return "\n".join(parts)
