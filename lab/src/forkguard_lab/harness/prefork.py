"""Run a pre-fork server (uWSGI, gunicorn) - or any helper process a test needs - and stop it.

Each process runs in its own session (process group), its output appended to a log file the
caller greps afterwards. :meth:`ServerProcess.stop` always ends the whole group, so no worker
outlives its master, and nothing here signals a process it did not start or kills by name.

:class:`ServerProcess` is any such process; :class:`AppServer` is a pre-fork server on a
127.0.0.1 port whose app answers ``/health`` and ``/echo`` (the lab's app, the fault suite's
app), with what the lab and the fault tests ask of one: its workers, a worker's recovery.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from typing import IO, Callable, Optional

from .http import http_get, http_reply
from .procfs import children_of

log = logging.getLogger("forkguard_lab")


class ServerProcess:
    """One process (and whatever it forks) in its own session, its output in ``log_path``."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: str,
        cwd: Optional[str] = None,
        die_with_parent: bool = False,
    ) -> None:
        self.argv, self.env, self.log_path, self.cwd = argv, env, log_path, cwd
        self.die_with_parent = die_with_parent
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._log_file: Optional[IO[bytes]] = None

    @property
    def master_pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> ServerProcess:
        """Start the process; returns at once (see :meth:`wait_until`)."""
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # One libc call between fork and exec; glibc's fork keeps malloc usable there.
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        return self

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it is true; RuntimeError with the log's tail if the process
        exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise RuntimeError(f"{what} exited with {code} at start; log:\n{self.tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready in {timeout:.0f}s; log:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self) -> Optional[int]:
        """The exit status if the process is gone (gunicorn halts when workers fail to boot)."""
        return None if self.proc is None else self.proc.poll()

    def worker_pids(self) -> list[int]:
        """The master's live children (its workers), from /proc."""
        return [] if self.proc is None else children_of(self.proc.pid)

    def read_log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except OSError as exc:
            log.warning("cannot read %s: %s", self.log_path, exc)
            return ""

    def tail(self, nchars: int = 5000) -> str:
        return self.read_log()[-nchars:]

    def stop(self, term_timeout: Optional[float] = None) -> None:
        """End the whole process group and reap the master.

        With ``term_timeout``, SIGTERM first and SIGKILL whatever is left after that many
        seconds (a server's own shutdown path runs); without, SIGKILL at once - for callers
        that have read what they need, where a graceful stop of stuck workers only costs time.
        """
        proc, self.proc = self.proc, None
        if proc is not None:
            if term_timeout is not None and proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(term_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("pid %d ignored SIGTERM for %.0fs", proc.pid, term_timeout)
            # Workers that outlived their master share its group: they go too.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the new process, between fork and exec: SIGTERM it when its starter dies.

    A server runs in its own session (so that stopping it takes its whole process group), so
    nothing else ends it if the tool that started it is killed outright (SIGKILL, e.g. by a
    test's timeout) and no ``finally`` runs: without this its master and workers stay behind.
    The signal follows the *thread* that started the process, so only a caller that starts
    its servers from a thread that outlives them (the benchmark: its main thread) opts in.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class AppServer(ServerProcess):
    """A pre-fork server with ``workers`` workers on 127.0.0.1:``port``; its app answers
    ``/health`` and ``/echo?token=..&hold=..`` with JSON that carries the worker's ``pid``."""

    def __init__(
        self,
        kind: str,
        port: int,
        argv: list[str],
        env: dict[str, str],
        log_path: str,
        *,
        workers: int,
        cwd: Optional[str] = None,
    ) -> None:
        super().__init__(argv, env, log_path, cwd)
        self.kind, self.port, self.workers = kind, port, workers
        # What readiness and the respawn probe ask: the lab's apps answer /health and a slow
        # /echo; a user's app is asked its own first URL, held by the lab's middleware.
        self.health_path = "/health"
        self.probe_path = "/echo?token=probe&hold=0.03"
        self.probe_headers: dict[str, str] = {}

    def start(self, timeout: float = 30.0) -> AppServer:
        """Start the server and wait until all its workers are up and ``/health`` answers."""
        super().start()
        self.wait_until(self._ready, timeout, self.kind)
        return self

    def _ready(self) -> bool:
        if len(self.worker_pids()) < self.workers:
            return False
        status, _ = http_get(self.port, self.health_path, timeout=2.0)
        return status == 200

    def measure_recovery(self, timeout: float = 6.0) -> tuple[Optional[float], str]:
        """SIGKILL one worker; (seconds until a *new* worker answers a DB request, status).

        Status is "ok", "errors" (the replacement answered, but with errors: it is not
        serving) or "timeout". Probes are bursts of slow echo requests, so the surviving
        workers are busy and the replacement gets a request as soon as it accepts.
        """
        before = set(self.worker_pids())
        if not before:
            return None, "no workers"
        t0 = time.monotonic()
        os.kill(min(before), signal.SIGKILL)
        while time.monotonic() - t0 < timeout:
            answers = self._new_worker_answers(before)
            if 200 in answers:
                return time.monotonic() - t0, "ok"
            if answers:
                return None, "errors"
        return None, "timeout"

    def _new_worker_answers(self, before: set[int]) -> list[int]:
        """One burst of 2 x workers slow echoes; the statuses of those a new worker answered."""
        answers: list[int] = []
        lock = threading.Lock()

        def probe() -> None:
            reply = http_reply(
                self.port, "GET", self.probe_path, timeout=5.0, headers=self.probe_headers
            )
            if reply.pid is not None and reply.pid not in before:
                with lock:
                    answers.append(reply.status)

        threads = [threading.Thread(target=probe) for _ in range(self.workers * 2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return answers
