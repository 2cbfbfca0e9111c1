"""Names and labels that more than one table, chart, target or page prints.

Kept here so a label reads the same wherever it appears and is changed in one place.
"""

from __future__ import annotations

from .prefork import VARIANT_LABELS

TIMES = "\u00d7"
ARROW = "\u2192"

# What any ``checkout`` listener costs before its first line: the split's first part.
FLOOR = "SQLAlchemy's slow path for any checkout listener"

DISPOSE_LABEL = VARIANT_LABELS["dispose"]
# Which app the forkguard run set against the recipe ran (a column of the dispose table).
DISPOSE_APP_LABELS = {
    "forkguard-closed": "the recipe's: session closed at import",
    "forkguard": "the reported one, unchanged",
}
NOT_MEASURED = "not measured in this run"
SERVER_NAMES = {"uwsgi": "uWSGI", "gunicorn": "gunicorn"}
PHASE_NAMES = {
    "ready": "ready",
    "load": "after load",
    "gc": "after full GC",
    "warm": "after warm load",
}
FORK_TITLE = "First working connection after fork"

# Under the docs directory.
DATA_JSON = "data/results.json"
IMG_OVERVIEW = "bench-overview.png"
IMG_MEMORY = "bench-memory.png"

__all__ = [
    "ARROW",
    "DATA_JSON",
    "DISPOSE_APP_LABELS",
    "DISPOSE_LABEL",
    "FLOOR",
    "FORK_TITLE",
    "IMG_MEMORY",
    "IMG_OVERVIEW",
    "NOT_MEASURED",
    "PHASE_NAMES",
    "SERVER_NAMES",
    "TIMES",
    "VARIANT_LABELS",
]
