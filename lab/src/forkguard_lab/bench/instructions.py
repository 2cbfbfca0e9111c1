"""Instructions per bare checkout + checkin, counted by valgrind's callgrind.

CPU time on a shared 2-core machine moves by more than forkguard's whole cost from one round to
the next; an instruction count does not. So the split of the bare checkout's cost - SQLAlchemy's
price for any ``checkout`` listener, then forkguard's own code - is also given as instructions.

Each configuration runs in a child process under ``valgrind --tool=callgrind``, with ``small``
and with ``large`` checkouts after the same warm-up, and ``(I_large - I_small) / (large -
small)`` is the count for one checkout + checkin. Only the counted loop is counted: it runs
inside ``functools.reduce`` and callgrind collects only while that C function is on the stack
(``--collect-atstart=no --toggle-collect=functools_reduce``). Counting the whole process instead
let start-up work that differs from one start to the next land in the difference: the import
system re-listing a directory whose mtime another run had just changed, a 1-second cache
expiring at a different point under valgrind's slowdown - up to ~750 instructions "per
checkout" in one of three starts, none of it in the loop. The cyclic GC is paused during the
counted loop (the timed benchmark keeps it on), so a collection landing in one run and not the
other does not count as anyone's cost.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .hotpath import BACKENDS, BARE_CONFIGS
from .timing import median

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
WARMUP = 200
# The C function the counted loop runs in: nothing on a checkout's path calls it.
COUNTED_FUNCTION = "functools_reduce"


def available() -> bool:
    return shutil.which("valgrind") is not None


def _count(config: str, n: int, url: str, timeout: float, repeat: int = 0) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", FG_BENCH_LAYOUT="x" * (64 * repeat))
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            f"--toggle-collect={COUNTED_FUNCTION}",
            sys.executable,
            "-m",
            "forkguard_lab.bench.instructions",
            config,
            str(n),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(
            f"callgrind run of {config!r} x{n} failed (exit {proc.returncode}): "
            f"{proc.stderr[-2000:]}"
        )
    return int(found.group(1))


def run_instructions(
    small: int = 500,
    large: int = 1500,
    repeats: int = 3,
    backend: str = "mariadb",
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Instructions per bare checkout + checkin for every configuration of the bare benchmark.

    Every (configuration, size) runs ``repeats`` times, each under a different environment
    size (which moves the initial stack and so every address), and the figures are medians
    over repeats with their range: the range shows how much the layout of one start moves a
    count of the loop alone.
    """
    url = BACKENDS[backend]
    jobs = [(c, n, r) for r in range(repeats) for c in BARE_CONFIGS for n in (small, large)]
    # Counts do not depend on what else runs, so the runs may share the machine's cores.
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        counts = list(pool.map(lambda job: _count(job[0], job[1], url, timeout, job[2]), jobs))
    totals = dict(zip(jobs, counts))
    per_repeat = [
        {c: (totals[(c, large, r)] - totals[(c, small, r)]) / (large - small) for c in BARE_CONFIGS}
        for r in range(repeats)
    ]
    splits = [
        {
            "checkout_dispatch": p["noop-checkout"] - p["unguarded"],
            "forkguard_own": p["forkguard"] - p["noop-checkout"],
            "added": p["forkguard"] - p["unguarded"],
        }
        for p in per_repeat
    ]
    return {
        "backend": backend,
        "small": small,
        "large": large,
        "repeats": repeats,
        "per_op": {c: median([p[c] for p in per_repeat]) for c in BARE_CONFIGS},
        "split": {k: median([s[k] for s in splits]) for k in splits[0]},
        "split_range": {
            k: [min(s[k] for s in splits), max(s[k] for s in splits)] for k in splits[0]
        },
        "per_repeat": per_repeat,
    }


def _child(argv: Sequence[str]) -> None:
    """One configuration, ``WARMUP`` + n bare checkouts; callgrind counts the n."""
    import functools
    import gc

    import sqlalchemy as sa

    from .hotpath import _assert_config, _set_config

    config, n, url = argv[0], int(argv[1]), argv[2]
    engine = sa.create_engine(url, pool_size=1, max_overflow=0, pool_reset_on_return=None)
    _set_config(config)
    _assert_config(engine, config)
    pool = engine.pool
    for _ in range(WARMUP):
        pool.connect().close()
    # A collection's cost is lumpy (one more or one fewer in a run moves the count by more than
    # the effect), so the cyclic GC waits until the counted loop is over.
    gc.collect()
    gc.disable()

    def checkout_and_checkin(done: int, _: int) -> int:
        pool.connect().close()
        return done + 1

    if functools.reduce(checkout_and_checkin, range(n), 0) != n:
        raise RuntimeError("the counted loop did not run")
    _set_config("unguarded")
    engine.dispose()


if __name__ == "__main__":
    _child(sys.argv[1:])
