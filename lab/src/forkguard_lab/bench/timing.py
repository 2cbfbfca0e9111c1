"""Small statistics for interleaved rounds: medians, quartiles and paired ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3); both the single value when there are fewer than two."""
    if len(values) < 2:
        v = float(values[0]) if values else float("nan")
        return v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return float(q[0]), float(q[2])


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Round-by-round ratios: each round measured both sides back to back."""
    return [a / b for a, b in zip(num, den) if b > 0]


def paired_diffs(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def rotation(items: Sequence[str], round_index: int) -> list[str]:
    """The order of the configurations in one round: rotated each round, so no configuration
    always runs first (caches warm) or last (the machine's load drifts)."""
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def summary(values: Sequence[float]) -> dict[str, float]:
    q1, q3 = quartiles(values)
    return {"median": median(values), "q1": q1, "q3": q3, "n": float(len(values))}
