"""The process ``forkguard doctor`` imports the target in: a stand-in for the pre-fork master.

Run as ``python -m forkguard.doctor.probe --spec JSON --out FILE``. Before anything of the
user's runs, it installs the recorders (:mod:`._recorders`: connections, checkouts, sockets,
threads; they change nothing the app can observe). Then it loads the target the way the master
would (:mod:`._loading`, :mod:`._masters`: ``module:app``, a gunicorn config, a uWSGI ini,
Django), lists what is still open (:mod:`._connections`, :mod:`._resources`, :mod:`._hooks`),
asks each database server for its limits (:mod:`._limits`), and writes the facts as JSON to
``--out``. The judging is done by the parent (:mod:`forkguard.doctor.findings`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from . import _recorders
from ._connections import all_engines, collect_connections, django_databases, engine_facts
from ._hooks import collect_postfork_hooks
from ._limits import collect_servers
from ._loading import import_error, load
from ._masters import Master
from ._recorders import recorder
from ._resources import collect_loops, collect_sockets, collect_threads


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Record, import ``spec``'s target, and return the facts of what it left open."""
    facts: dict[str, Any] = {
        "probe_pid": os.getpid(),
        "python": sys.version.split()[0],
        "cwd": os.getcwd(),
    }
    facts["drivers_hooked"] = _recorders.install()
    gunicorn_config = _import_target(spec, facts)
    if facts["import_error"] is not None:
        return facts
    facts.update(_open_facts(gunicorn_config))
    facts["forkguard_installed"] = _forkguard_installed()
    return facts


def _import_target(spec: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """Load the target into ``facts`` (its master, the import's time and error); the gunicorn
    config's globals."""
    started = time.monotonic()
    master: Master = Master()
    config: dict[str, Any] = {}
    try:
        master, config = load(spec)
    except BaseException as exc:  # the user's import failed: that is the report, not a crash
        facts["import_error"] = import_error(exc)
    else:
        facts["import_error"] = None
    facts["import_seconds"] = round(time.monotonic() - started, 3)
    recorder.enabled = False
    facts["master"] = master.__dict__
    return config


def _open_facts(gunicorn_config: dict[str, Any]) -> dict[str, Any]:
    """What is open after import, and the limits of the servers it talks to."""
    db_inodes: set[int] = set()
    pairs = collect_connections(db_inodes)
    connections = [entry for entry, _ in pairs]
    engines = all_engines()
    facts: dict[str, Any] = {
        "connections": connections,
        "engines": {str(id(e)): engine_facts(e) for e in engines},
        "threads": collect_threads(),
        "sockets": collect_sockets(db_inodes),
        "event_loops": collect_loops(),
        "django_databases": django_databases(),
        "postfork_hooks": collect_postfork_hooks(gunicorn_config),
    }
    for entry in connections:
        entry["engine"] = str(entry["engine"]) if entry["engine"] is not None else None
    facts["servers"] = collect_servers(engines, pairs)
    return facts


def _forkguard_installed() -> bool:
    try:
        import forkguard

        return forkguard.is_installed()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forkguard.doctor.probe")
    parser.add_argument("--spec", required=True, help="the target, as JSON")
    parser.add_argument("--out", required=True, help="where to write the facts (JSON)")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)  # the parent already started us in the right directory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    facts = probe(spec)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=1, default=str)
    _recorders.close_recorded()
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads the app started at import may never end: leave like a killed master would, after
    # closing the connections we saw politely (no "aborted connection" in the server's log).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
