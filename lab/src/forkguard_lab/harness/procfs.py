"""What the lab and the benchmarks read about processes from /proc: children, memory, page
faults and CPU time. Linux only, like the rest of the lab; nothing here signals a process."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("forkguard_lab")


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command name: field 3 (state) is item 0. Raises OSError if
    the process is gone."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read().decode()
    # comm may contain spaces and parentheses: split after the last ')'.
    return stat[stat.rfind(")") + 2 :].split()


def children_of(ppid: int) -> list[int]:
    """Live child pids of ``ppid`` (zombies excluded), read from /proc/*/stat."""
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rest = _stat_fields(name)
        except OSError:  # exited while we scanned
            continue
        if len(rest) >= 2 and rest[1] == str(ppid) and rest[0] != "Z":
            out.append(int(name))
    return sorted(out)


def child_pids(ppid: int) -> set[int]:
    """Children of ``ppid`` (zombies included) without scanning /proc: cheap enough to poll."""
    try:
        with open(f"/proc/{ppid}/task/{ppid}/children", "rb") as fh:
            return {int(pid) for pid in fh.read().split()}
    except OSError:  # no CONFIG_PROC_CHILDREN: the slow, complete scan
        return set(children_of(ppid))


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_Clean and Private_Dirty (kB) of one process; {} if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    out[key] = int(rest.split()[0])
    except OSError as exc:  # it exited between listing and reading: a worker recycled
        log.debug("no smaps_rollup for pid %d: %s", pid, exc)
    return out


@dataclass(frozen=True)
class Counters:
    """What a set of processes has spent so far: minor faults (a copy-on-write copy is one)
    and CPU seconds in user and kernel mode."""

    minor_faults: int = 0
    user_s: float = 0.0
    system_s: float = 0.0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.minor_faults - other.minor_faults,
            self.user_s - other.user_s,
            self.system_s - other.system_s,
        )


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def counters(pids: Sequence[int]) -> Counters:
    """:class:`Counters` summed over ``pids`` (from /proc/PID/stat); a vanished pid is skipped."""
    faults, user, system = 0, 0, 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError as exc:
            log.warning("no stat for pid %d: %s", pid, exc)
            continue
        faults += int(fields[7])
        user += int(fields[11])
        system += int(fields[12])
    return Counters(faults, user / _CLOCK_TICKS, system / _CLOCK_TICKS)


def pss_kb(pid: int) -> int:
    """Proportional set size of one process in kB; 0 if it is gone."""
    return smaps_rollup(pid).get("Pss", 0)
