"""Turn ``results.json`` into every output: the terminal summary, the PNG charts, the two docs
pages, the committed copy of the run and the README's bench block.

Everything printed or written is computed from the JSON alone, so the docs can be regenerated
from a stored run: ``make docs`` renders them, and the README's block, from the committed
``docs/data/results.json``. Where each part lives:

* :mod:`.figures` - numbers derived from the run (ratios, pooled medians, splits);
* :mod:`.tables`, :mod:`.server_tables` - the tables, as rows of strings;
* :mod:`.targets` - the issue's targets, met or missed;
* :mod:`.terminal` - the plain-text summary; :mod:`.charts` - the PNGs;
* :mod:`.pages` - one module per page, with the words the pages share in ``pages.shared``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from . import readme as readme_block
from .charts import charts
from .figures import md_table, prefork_ratios
from .pages.benchmarks import benchmarks_md
from .pages.memory import memory_md
from .server_tables import cow_rows
from .targets import target_rows, targets
from .terminal import terminal
from .terms import DATA_JSON, IMG_MEMORY, IMG_OVERVIEW

__all__ = [
    "IMG_MEMORY",
    "IMG_OVERVIEW",
    "benchmarks_md",
    "charts",
    "cow_rows",
    "md_table",
    "memory_md",
    "prefork_ratios",
    "slim",
    "target_rows",
    "targets",
    "terminal",
    "write_docs",
    "write_json",
]

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
