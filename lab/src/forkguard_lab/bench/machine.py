"""Describe the machine a benchmark ran on: CPU, cores, memory, kernel, versions, load."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import sys
from importlib import metadata
from typing import Any

from ..harness.provenance import checkout_commit

log = logging.getLogger("forkguard_lab.bench")

PACKAGES = (
    "forkguard",
    "SQLAlchemy",
    "mysqlclient",
    "PyMySQL",
    "psycopg2-binary",
    "Flask",
    "Flask-SQLAlchemy",
    "gunicorn",
    "uWSGI",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError as exc:
        log.warning("cannot read /proc/cpuinfo: %s", exc)
    return platform.processor() or "unknown"


def _mem_total_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError as exc:
        log.warning("cannot read /proc/meminfo: %s", exc)
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    """Everything a reader needs to judge the numbers, captured at the start of the run."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "cores_usable": len(os.sched_getaffinity(0)),
        "mem_total_mb": _mem_total_mb(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": checkout_commit(),
        "load_at_start": load_average(),
    }


def one_line(machine: dict[str, Any]) -> str:
    pk = machine.get("packages", {})
    return (
        f"{machine.get('cpu')} ({machine.get('cores_usable')} cores usable), "
        f"{machine.get('mem_total_mb')} MB RAM, {machine.get('kernel')}, {machine.get('python')}, "
        f"SQLAlchemy {pk.get('SQLAlchemy')}, load average at start "
        f"{' / '.join(str(x) for x in machine.get('load_at_start', []))}"
    )
