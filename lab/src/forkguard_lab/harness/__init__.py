"""What every real-server test and tool here needs, in one place.

Private throwaway MariaDB / PostgreSQL servers (:mod:`.servers`), uWSGI and gunicorn command
lines (:mod:`.commands`), pre-fork server processes started and stopped by process group
(:mod:`.prefork`), the HTTP client (:mod:`.http`) and the load sent through it (:mod:`.load`),
database error kinds counted in server logs (:mod:`.logscan`) and what ``/proc`` says about a
process tree (:mod:`.procfs`). The lab, the benchmarks, ``tests/faults``,
``tests/integrations`` and ``tests/test_prefork_servers.py`` all use these.
"""

from __future__ import annotations

__all__: list[str] = []
