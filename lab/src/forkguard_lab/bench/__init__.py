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
  preload + forkguard vs preload + forkguard + ``freeze_gc``;
* :mod:`.report` - the terminal table, ``results.json``, the PNG charts and the generated
  ``docs/benchmarks.md`` and ``docs/memory.md``.
"""

from __future__ import annotations

__all__: list[str] = []
