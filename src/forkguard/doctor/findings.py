"""From the probe's facts to findings: what is wrong, how bad, and the concrete fix for each.

Each finding comes from a small rule (a predicate and the finding it makes) in a table per
subject: :mod:`._connection_rules` (each connection open after import), :mod:`._pool_rules`
(pools against their server's limits), :mod:`._process_rules` (the master's notes, post-fork
hooks, threads, sockets, event loops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._budget import PoolerBudget, budget
from ._connection_rules import CONNECTION_RULES
from ._pool_rules import pool_findings, servers_of
from ._process_rules import NOTE_RULES, process_findings
from ._rules import Context, Finding, first_match

SEVERITIES = ("error", "warning", "info")

# Exit codes of ``forkguard doctor``.
EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

# The first severity present gives the verdict; with none of these the import is clean.
_VERDICTS = (("error", "unsafe", EXIT_FINDINGS), ("warning", "warnings", EXIT_FINDINGS))

__all__ = [
    "EXIT_CLEAN",
    "EXIT_ERROR",
    "EXIT_FINDINGS",
    "SEVERITIES",
    "Diagnosis",
    "Finding",
    "analyze",
    "budgets",
    "resolve_workers",
]


@dataclass
class Diagnosis:
    facts: dict[str, Any]
    findings: list[Finding]
    workers: int | None
    workers_source: str | None
    verdict: str  # clean | warnings | unsafe | import-error
    exit_code: int
    hosts: int = 1
    budgets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            counts[finding.severity] += 1
        return counts


def resolve_workers(facts: dict[str, Any], override: int | None) -> tuple[int | None, str | None]:
    if override is not None:
        return override, "--workers"
    master = facts.get("master") or {}
    if master.get("workers") is not None:
        return int(master["workers"]), f"{master.get('server')} config"
    return None, None


def _context(facts: dict[str, Any], workers: int | None, hosts: int) -> Context:
    late = [h for h in facts.get("postfork_hooks") or [] if h.get("calls_install")]
    return Context(
        master=facts.get("master") or {},
        workers=workers,
        hosts=hosts,
        django=bool(facts.get("django_databases")),
        late_install=f"{late[0]['name']} ({late[0]['source']})" if late else None,
        has_connections=bool(facts.get("connections")),
        forkguard_installed=bool(facts.get("forkguard_installed")),
    )


def _findings(facts: dict[str, Any], ctx: Context) -> list[Finding]:
    """Every finding, in the report's order (before sorting by severity)."""
    findings = first_match(NOTE_RULES, ctx.master.get("notes") or [], ctx)
    findings += first_match(CONNECTION_RULES, facts.get("connections") or [], ctx)
    findings += pool_findings(facts, ctx)
    findings += process_findings(facts, ctx)
    return findings


def budgets(facts: dict[str, Any], workers: int | None, hosts: int) -> list[dict[str, Any]]:
    """The fleet's connection budget on each server whose limits and pools are known (through
    its pooler when the pooler's limits were read), with the settings that would fit."""
    found = []
    for server in servers_of(facts):
        fleet = budget(server, hosts, workers)
        if fleet is None:
            continue
        pooler = server.pooler or {}
        if pooler.get("max_client_conn") is not None:
            found.append(PoolerBudget(fleet).data())
        else:
            found.append({**fleet.data(), "recommendation": fleet.recommendation()})
    return found


def analyze(facts: dict[str, Any], workers: int | None = None, hosts: int = 1) -> Diagnosis:
    """Judge the probe's facts; ``workers`` overrides the config's worker count, ``hosts`` is
    how many hosts run the same app against the same servers."""
    count, source = resolve_workers(facts, workers)
    if facts.get("import_error"):
        return Diagnosis(facts, [], count, source, "import-error", EXIT_ERROR, hosts)
    findings = _findings(facts, _context(facts, count, hosts))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])
    severities = {f.severity for f in findings}
    verdict, code = next(
        ((v, c) for severity, v, c in _VERDICTS if severity in severities), ("clean", EXIT_CLEAN)
    )
    fleet = budgets(facts, count, hosts)
    return Diagnosis(facts, findings, count, source, verdict, code, hosts, fleet)
