"""HTTP clients: requests per second through one ``requests.Session`` with keep-alive, with
forkguard installed and without, interleaved like the pool hot path (:mod:`.hotpath`: one
process, ``install()`` / ``uninstall()`` between rounds, paired per-round ratios).

forkguard's urllib3 adapter runs only when urllib3 opens a connection; a keep-alive session
reuses its one connection, so no code of forkguard's is on this path and the ratio should be
1.0 within noise. The harness checks it: before every round, that the adapter is in place
exactly when forkguard is installed, and at the end, that the private HTTPS echo server saw
one connection in all (every request of every round reused it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Callable

import forkguard

from ..harness.https_echo import ECHO_HEADER, private_https_echo
from .hotpath import Sample, interleave
from .timing import paired_ratios, summary

log = logging.getLogger("forkguard_lab.bench")

CLIENT_CONFIGS = ("unguarded", "forkguard")


@dataclass
class ClientsConfig:
    # The echo server shares the machine's cores: many short rounds (~35 s in all).
    rounds: int = 201
    requests_per_round: int = 100


def _config_check() -> Callable[[str], None]:
    """A check that the adapter is in place exactly when forkguard is installed: urllib3's
    ``create_connection`` is the one it had before forkguard was ever installed, or not."""
    from urllib3.util import connection

    if forkguard.is_installed():
        raise RuntimeError("the client benchmark must start without forkguard installed")
    original = connection.create_connection

    def check(name: str) -> None:
        wrapped = connection.create_connection is not original
        wanted = name == "forkguard"
        if (forkguard.is_installed(), wrapped) != (wanted, wanted):
            raise RuntimeError(
                f"client benchmark configuration {name!r} is not in effect: installed "
                f"{forkguard.is_installed()}, urllib3 adapter in place {wrapped}"
            )

    return check


def _session_op(session: Any, url: str) -> Callable[[int], Sample]:
    def run(n: int) -> Sample:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for i in range(n):
            reply = session.get(url, headers={ECHO_HEADER: str(i)}, timeout=10)
            if reply.status_code != 200:
                raise RuntimeError(f"echo server answered {reply.status_code}")
        return (time.perf_counter_ns() - t0) / n, (time.thread_time_ns() - c0) / n

    return run


def run_clients(cfg: ClientsConfig) -> dict[str, Any]:
    import requests

    with private_https_echo() as echo:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the echo server's CA
        session.verify = echo.ca_path
        try:
            log.info("HTTP clients: requests.Session, keep-alive, %d rounds", cfg.rounds)
            wall, cpu = interleave(
                _session_op(session, f"{echo.url}/bench"),
                cfg.requests_per_round,
                cfg.rounds,
                CLIENT_CONFIGS,
                _config_check(),
            )
        finally:
            session.close()
        connections = echo.connections()
    if connections != 1:
        raise RuntimeError(f"the session opened {connections} connections, expected 1")
    # Requests per second: with / without is the inverse of the time ratio.
    rps_ratio = paired_ratios(wall["unguarded"], wall["forkguard"])
    return {
        "config": vars(cfg).copy(),
        "client": f"requests {version('requests')}",
        "connections": connections,
        "wall_ns": {c: summary(v) for c, v in wall.items()},
        "cpu_ns": {c: summary(v) for c, v in cpu.items()},
        "rps_ratio": summary(rps_ratio),
        "cpu_ratio": summary(paired_ratios(cpu["forkguard"], cpu["unguarded"])),
    }
