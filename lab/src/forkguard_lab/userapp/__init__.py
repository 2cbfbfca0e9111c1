"""``forkguard lab --app``: the user's own WSGI app under the lab's pre-fork servers.

The lab's matrix proves forkguard on the app from the bug report; this package runs *your*
app the same way - uWSGI (master + 4 workers, no lazy-apps) and gunicorn ``--preload`` (4
workers), each without forkguard, with ``forkguard.install()`` as the first line of the WSGI
module, and lazily loaded as the control - and reports the same table.

One module per job: :mod:`.target` (what ``--app`` names: ``module:app``, a Django WSGI
module, a uWSGI ini or a gunicorn config), :mod:`.middleware` (the WSGI wrapper the servers
load: the worker's pid on every answer, a probe route, Django's request errors in the log),
:mod:`.settings` (``--url``, ``--env`` with private database placeholders, ``--setup``),
:mod:`.cell` (one server x strategy cell) and :mod:`.run` (the run: preflight, cells, checks).
"""

from __future__ import annotations

# The strategies that make sense for an app the lab did not write: as deployed, forkguard's
# one line, and loading the app in each worker after the fork (the usual answer).
APP_STRATEGIES = ("none", "lazy", "forkguard")

__all__ = ["APP_STRATEGIES"]
