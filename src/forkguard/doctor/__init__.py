"""``forkguard doctor``: find what a pre-fork master leaves open for its workers to inherit.

The target is imported in a separate process (:mod:`forkguard.doctor.probe`) the way gunicorn
(``--preload``) or uWSGI (without ``lazy-apps``) imports it before forking; that process reports
facts (open connections, engines, server limits, threads, sockets, event loops) as JSON and
:mod:`forkguard.doctor.findings` turns them into findings with a fix each. Nothing of forkguard
is needed at run time in the user's app.
"""

from __future__ import annotations

from .findings import Finding, analyze
from .runner import ProbeError, Spec, run_probe

__all__ = ["Finding", "ProbeError", "Spec", "analyze", "run_probe"]
