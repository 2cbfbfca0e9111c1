"""Write the results table of the fault-injection suite into ``docs/reliability.md``.

The suite calls :func:`write_report` at the end of a session when ``FG_RELIABILITY_REPORT`` is
set; ``python -m tests.faults.report results.json docs/reliability.md`` does the same from a
saved ``$FG_FAULTS_RESULTS`` file. Only the text between the two markers is replaced.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from typing import Any

BEGIN = "<!-- reliability-table:begin -->"
END = "<!-- reliability-table:end -->"
COLUMNS = (
    ("case", "case"),
    ("server", "server"),
    ("db", "database / driver"),
    ("config", "app config"),
    ("load", "load"),
    ("faults", "faults injected"),
    ("survived", "survived"),
    ("errors", "failed requests"),
    ("db_errors", "DB errors in logs"),
    ("lost_writes", "lost writes"),
    ("mismatches", "mismatches"),
    ("seconds", "s"),
    ("verdict", "verdict"),
)


def _order(row: dict[str, Any]) -> tuple[int, str]:
    head = str(row.get("case", "")).split(" ", 1)[0]
    return (int(head) if head.isdigit() else 99, str(row.get("case", "")))


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(doc: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = sorted(doc["rows"], key=_order)
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key, "")) for key, _ in COLUMNS) + " |")
    notes = [f"- **{r['case']}** ({r['server']}, {r['db']}): {r['notes']}" for r in rows
             if r.get("notes")]  # fmt: skip
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(doc.get("started", time.time())))
    head = (
        f"Run of {when} on commit {doc.get('commit', 'unknown')} (`make test-faults`), "
        f"{doc.get('seconds', '?')} s in all, Python "
        f"{platform.python_version()} on {platform.machine()} "
        f"({len(rows)} rows)."
    )
    return "\n".join([head, "", *lines, "", *notes])


def write_report(doc: dict[str, Any], path: str) -> None:
    """Replace the table between the markers in ``path`` (or append markers and table)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        text = "# Reliability\n\n"
    block = f"{BEGIN}\n{table(doc)}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.faults.report RESULTS.json docs/reliability.md")
    with open(sys.argv[1]) as fh:
        write_report(json.load(fh), sys.argv[2])
