"""Per-process counters, so a worker can report what forkguard did for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Stats:
    forks_seen: int = 0
    connections_opened: int = 0
    # Inherited connections whose socket now points at /dev/null (successes only).
    connections_neutralized: int = 0
    # Inherited connections forkguard could not silence (see the ERROR it logged).
    neutralize_failed: int = 0
    # Steps of forkguard's own fork handling that raised (see the ERROR it logged).
    fork_handling_errors: int = 0
    pools_replaced: int = 0
    sessions_reset: int = 0
    strict_violations: int = 0
    # install() calls that found they ran in a child after the fork (see the WARNING).
    late_installs: int = 0
    # gc.freeze() calls made by this process: one per fork it performed (uWSGI worker: its own).
    gc_freezes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


counters = Stats()


def reset_for_child() -> None:
    """A child starts its own count: the parent's numbers describe the parent."""
    for field in fields(counters):
        setattr(counters, field.name, 0)
