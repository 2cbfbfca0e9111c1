"""What every real-server test and tool here needs, in one place.

Private throwaway MariaDB / PostgreSQL servers (:mod:`.servers`), uWSGI and gunicorn command
lines (:mod:`.commands`), the HTTP load client (:mod:`.load`), database error kinds counted in
server logs (:mod:`.logscan`) and what ``/proc`` says about a process tree (:mod:`.procfs`).
The lab, the benchmarks, ``tests/faults`` and ``tests/integrations`` all use these.
"""

from __future__ import annotations

__all__: list[str] = []
