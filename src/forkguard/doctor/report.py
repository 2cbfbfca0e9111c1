"""Findings as a human report (colours only on a terminal) or as JSON for machines."""

from __future__ import annotations

import copy
import json
import linecache
import os
import textwrap
from typing import Any

from .findings import Diagnosis, Finding

JSON_SCHEMA_VERSION = 1

_COLOURS = {
    "error": "31;1",
    "warning": "33;1",
    "info": "36",
    "ok": "32;1",
    "dim": "2",
    "bold": "1",
}
_LABELS = {"error": "ERROR", "warning": "WARN ", "info": "info "}


class Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, name: str, text: str) -> str:
        if not self.colour:
            return text
        return f"\033[{_COLOURS[name]}m{text}\033[0m"


def _short(path: str | None) -> str | None:
    """``file:line`` relative to the current directory when that is shorter."""
    if not path:
        return path
    filename, sep, line = path.rpartition(":")
    if not sep:
        return path
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return path
    return f"{rel}:{line}" if len(rel) < len(filename) and not rel.startswith("../..") else path


def _source(location: str | None) -> str | None:
    if not location:
        return None
    filename, _, line = location.rpartition(":")
    if not line.isdigit():
        return None
    text = linecache.getline(filename, int(line)).strip()
    return text or None


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(
        text, width=100, initial_indent=indent, subsequent_indent=indent, break_long_words=False
    )


def _target_line(diagnosis: Diagnosis, target: str) -> list[str]:
    facts = diagnosis.facts
    master = facts.get("master") or {}
    lines = [f"forkguard doctor: {target}"]
    server = master.get("server")
    bits = []
    if server in ("gunicorn", "uwsgi"):
        bits.append(f"{server} master")
        bits.append(f"app {master.get('app')}")
        bits.append("preloaded" if master.get("preload") else "NOT preloaded")
    else:
        bits.append("imported as a preloading master would")
    if diagnosis.hosts > 1:
        bits.append(f"{diagnosis.hosts} hosts")
    if diagnosis.workers is not None:
        bits.append(f"{diagnosis.workers} workers ({diagnosis.workers_source})")
    else:
        bits.append("worker count unknown")
    if facts.get("import_seconds") is not None:
        bits.append(f"import took {facts['import_seconds']:.2f}s")
    lines.append("  " + ", ".join(bits))
    return lines


def format_import_error(error: dict[str, Any], verbose: bool) -> str:
    where = _short(error.get("location"))
    text = f"{error['type']}: {error['message']}"
    if where:
        text += f"\n  at {where}"
        source = _source(error.get("location"))
        if source:
            text += f"\n    {source}"
    if error["type"] == "ModuleNotFoundError" and not where:
        text += (
            f"\n  (imported from {error.get('cwd') or os.getcwd()}; run the doctor from your "
            "project's directory or pass --chdir DIR / --pythonpath DIR)"
        )
    if verbose and error.get("traceback"):
        text += "\n\n" + str(error["traceback"]).rstrip()
    return text


def _finding_lines(finding: Finding, style: Style, verbose: bool) -> list[str]:
    label = style(finding.severity, _LABELS[finding.severity])
    lines = [f"{label} {style('bold', finding.title)}"]
    if finding.location:
        lines.append(f"      at {_short(finding.location)}")
        source = _source(finding.location)
        if source:
            lines.append(style("dim", f"         {source}"))
    if finding.detail:
        lines.append(_wrap(finding.detail, "      "))
    if finding.fix:
        lines.append(_wrap("fix: " + finding.fix, "      "))
    if verbose and finding.stack:
        held = finding.data.get("checked_out_at") and finding.location == finding.data.get(
            "checked_out_at"
        )
        lines.append("      held from:" if held else "      opened from:")
        lines += ["      " + ln for ln in "".join(finding.stack).rstrip().splitlines()]
    return lines


def _engine_lines(diagnosis: Diagnosis) -> list[str]:
    facts = diagnosis.facts
    servers = facts.get("servers") or {}
    lines = []
    for engine in (facts.get("engines") or {}).values():
        pool = engine["pool"]
        if engine.get("pool_size") is not None:
            pool += f" size={engine['pool_size']} overflow={engine['max_overflow']}"
        recycle = engine.get("pool_recycle", -1)
        pool += f" recycle={recycle if recycle >= 0 else 'off'}"
        pool += f" pre_ping={'on' if engine.get('pool_pre_ping') else 'off'}"
        lines.append(f"  engine {engine['url']}: {pool}")
    for key, info in servers.items():
        lines += _server_lines(key, info)
    lines += [_budget_line(b) for b in diagnosis.budgets]
    return lines


def _server_lines(key: str, info: dict[str, Any]) -> list[str]:
    if "max_connections" not in info:
        return [f"  server {key}: {info.get('error')}"]
    timeout = info.get("wait_timeout_setting", "wait_timeout")
    usable = info.get("usable_connections", info["max_connections"])
    lines = [
        f"  server {key}: {info.get('product')} {info.get('version')}, "
        f"max_connections={info['max_connections']} ({usable} usable), "
        f"{timeout}={info['wait_timeout']}s"
    ]
    pooler = info.get("pooler")
    if pooler:
        name = f"{pooler.get('product') or 'a pooler or proxy'} {pooler.get('version', '')}"
        limits = (
            f"max_client_conn={pooler['max_client_conn']}, "
            f"default_pool_size={pooler.get('default_pool_size')}, "
            f"pool_mode={pooler.get('pool_mode')}"
            if pooler.get("max_client_conn") is not None
            else f"limits unknown: {pooler.get('error')}"
        )
        lines.append(f"    through {name.strip()} (server port {info.get('port')}): {limits}")
    return lines


def _budget_line(entry: dict[str, Any]) -> str:
    fleet = f"{entry['hosts']} hosts x " if entry["hosts"] > 1 else ""
    master = entry["master_connections"]
    text = (
        f"  budget {entry['server']}: {fleet}{entry['workers']} workers x {entry['per_worker']}"
        + (f" + {master} in the master" if master else "")
        + f" = {entry['total']}"
    )
    if entry.get("pooler"):
        text += (
            f" clients; through {entry['pooler_instances']} x {entry['pooler']}: "
            f"{entry['pooler_clients']} clients per pooler of max_client_conn="
            f"{entry['max_client_conn']}, {entry['pooler_server_connections']} server "
            f"connections of {entry['usable']} usable"
        )
    else:
        text += f" of {entry['usable']} usable"
    return text + (": fits" if entry["fits"] else ": DOES NOT FIT")


def render_text(diagnosis: Diagnosis, target: str, *, colour: bool, verbose: bool) -> str:
    style = Style(colour)
    out = _target_line(diagnosis, target)
    error = diagnosis.facts.get("import_error")
    if error:
        out.append("")
        out.append(style("error", "could not import the target:"))
        out.append(format_import_error(error, verbose))
        return "\n".join(out)
    conns = diagnosis.facts.get("connections") or []
    engines = _engine_lines(diagnosis)
    if engines:
        out.append("")
        out += engines
    out.append("")
    for finding in diagnosis.findings:
        out += _finding_lines(finding, style, verbose)
        out.append("")
    counts = diagnosis.counts
    summary = (
        f"{len(conns)} database connection(s) open after import; "
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s)"
    )
    verdicts = {
        "unsafe": style("error", "UNSAFE: the errors above break the workers of a pre-fork server"),
        "warnings": style("warning", "RISKY: fix the warnings above"),
        "clean": style("ok", "CLEAN: nothing a worker would inherit"),
    }
    master = diagnosis.facts.get("master") or {}
    if diagnosis.verdict == "clean" and any(
        f.kind == "guarded-connection" for f in diagnosis.findings
    ):
        verdicts["clean"] = style("ok", "CLEAN: forkguard guards what the workers inherit")
    elif diagnosis.verdict == "clean" and not master.get("preload", True):
        verdicts["clean"] = style("ok", "SAFE, but not preloaded: each worker imports the app")
    out.append(f"verdict: {verdicts[diagnosis.verdict]}")
    out.append(f"  {summary}")
    return "\n".join(out)


def render_json(diagnosis: Diagnosis, target: str, *, verbose: bool) -> str:
    facts = copy.deepcopy(diagnosis.facts)
    doc: dict[str, Any] = {
        "schema": JSON_SCHEMA_VERSION,
        "target": target,
        "verdict": diagnosis.verdict,
        "exit_code": diagnosis.exit_code,
        "workers": diagnosis.workers,
        "workers_source": diagnosis.workers_source,
        "hosts": diagnosis.hosts,
        "budget": diagnosis.budgets,
        "master": facts.get("master"),
        "import_seconds": facts.get("import_seconds"),
        "import_error": None,
        "counts": diagnosis.counts,
        "findings": [f.as_dict() for f in diagnosis.findings],
        "connections": facts.get("connections", []),
        "engines": list((facts.get("engines") or {}).values()),
        "servers": facts.get("servers", {}),
        "threads": facts.get("threads", []),
        "sockets": facts.get("sockets", []),
        "event_loops": facts.get("event_loops", []),
    }
    error = facts.get("import_error")
    if error:
        doc["import_error"] = {k: v for k, v in error.items() if verbose or k != "traceback"}
    if not verbose:
        for item in doc["findings"] + doc["connections"] + doc["threads"] + doc["sockets"]:
            item.pop("stack", None)
        for engine in doc["engines"]:
            engine.pop("created_stack", None)
    return json.dumps(doc, indent=2, default=str)
