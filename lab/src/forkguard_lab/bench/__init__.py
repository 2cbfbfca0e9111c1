"""``forkguard bench``: forkguard's cost and preloading's savings, measured side by side.

Every figure is a ratio of two things measured in the same run, as medians over interleaved
rounds, with the machine described next to it:

* :mod:`.hotpath` - checkout + ``SELECT 1`` + checkin, guarded vs unguarded (MariaDB and
  PostgreSQL); bare checkout/checkin (pure CPU); the fork check itself; and the time a child
  takes to get its first working connection after ``fork()`` (forkguard vs a manual
  ``dispose(close=False)``);
* :mod:`.prefork` - a Flask-SQLAlchemy app holding a large working set at import
  (:mod:`.memapp`) under uWSGI and gunicorn: memory (PSS/USS) at ready, after load and after a
  full collection in every worker, start-up, respawn and throughput, for lazy-apps vs
  preload + forkguard vs preload + forkguard + ``freeze_gc``; and, in one worker count,
  against SQLAlchemy's ``dispose(close=False)`` post-fork recipe - with forkguard both on the
  reported app and on the app changed as the recipe needs it (like for like);
* :mod:`.report` - everything a run writes, from ``results.json`` alone: the terminal summary
  (:mod:`.terminal`), the PNG charts (:mod:`.charts`), the tables (:mod:`.tables`,
  :mod:`.server_tables`), the targets (:mod:`.targets`) and the generated pages
  (:mod:`.pages`: ``docs/benchmarks.md``, ``docs/memory.md`` and the README's block).
"""

from __future__ import annotations

__all__: list[str] = []
