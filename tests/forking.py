"""Run a function in a real child process made by a real fork, and bring back its result.

Three mechanisms, because forkguard must notice each: ``os.fork()`` (runs Python's at-fork
hooks), ``multiprocessing`` with the fork start method, and libc ``fork()`` through ctypes,
which is how uWSGI forks and which runs no Python hook at all.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import time
import traceback
from typing import Any, Callable

MECHANISMS = ("os", "multiprocessing", "ctypes")
_libc = ctypes.CDLL(None, use_errno=True)


def _child_main(fn: Callable[[], Any], write_fd: int, timeout: float) -> None:
    signal.alarm(int(timeout) + 1)  # a child stuck on a shared socket must not hang the suite
    try:
        result: Any = {"ok": True, "value": fn()}
    except BaseException as exc:  # report everything to the parent; the child then exits
        result = {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "mro": [c.__name__ for c in type(exc).__mro__],
            "traceback": traceback.format_exc(),
        }
    with os.fdopen(write_fd, "w") as out:
        json.dump(result, out, default=repr)


def _read(read_fd: int) -> dict[str, Any]:
    with os.fdopen(read_fd) as src:
        data = src.read()
    if not data:
        return {"ok": False, "error": "NoResult", "message": "child died without a result"}
    result: dict[str, Any] = json.loads(data)
    return result


def start_child(
    fn: Callable[[], Any], mechanism: str = "os", timeout: float = 30
) -> Callable[[], dict[str, Any]]:
    """Fork now; returns a function that waits for the child and returns its result."""
    read_fd, write_fd = os.pipe()
    if mechanism == "multiprocessing":
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=_child_main, args=(fn, write_fd, timeout))
        proc.start()
        os.close(write_fd)

        def wait_mp() -> dict[str, Any]:
            result = _read(read_fd)
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
            return result

        return wait_mp
    if mechanism == "os":
        pid = os.fork()
    elif mechanism == "ctypes":
        pid = _libc.fork()
    else:
        raise ValueError(mechanism)
    if pid == 0:
        code = 0
        try:
            os.close(read_fd)
            _child_main(fn, write_fd, timeout)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)

    def wait() -> dict[str, Any]:
        result = _read(read_fd)
        deadline = time.monotonic() + timeout
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        return result

    return wait


def run_in_child(
    fn: Callable[[], Any], mechanism: str = "os", timeout: float = 30
) -> dict[str, Any]:
    return start_child(fn, mechanism, timeout)()
