"""The PNG charts (matplotlib, Agg): the overview (hot path, ORM path, fork cost) and memory
per cell. matplotlib is imported only when a chart is drawn."""

from __future__ import annotations

import os
from typing import Any

from .figures import cells, find_run, mem, orm_case, variants_in
from .targets import HOT_TARGET
from .terms import FORK_TITLE, IMG_MEMORY, IMG_OVERVIEW, PHASE_NAMES, VARIANT_LABELS

COLORS = {
    "lazy": "#bbbbbb",
    "forkguard": "#4477aa",
    "forkguard-freeze": "#228833",
    "forkguard-closed": "#66ccee",
    "dispose": "#ccbb44",
}
MEMORY_PHASES = ("ready", "load", "gc")
Bars = tuple[list[str], list[float], list[list[list[float]]]]


def _ratio_bars(doc: dict[str, Any]) -> Bars:
    """(labels, medians, [[below], [above]] error bars) of every guarded/unguarded ratio."""
    labels: list[str] = []
    values: list[float] = []
    errs: list[list[list[float]]] = []

    def add(label: str, r: dict[str, float]) -> None:
        labels.append(label)
        values.append(r["median"])
        errs.append([[r["median"] - r["q1"]], [r["q3"] - r["median"]]])

    hot = doc.get("hotpath", {})
    for kind, name in (("query", "SELECT 1"), ("bare", "bare checkout")):
        for backend, res in hot.get(kind, {}).items():
            add(f"{backend}\n{name}", res["ratio_forkguard"])
    for case in doc.get("orm", {}).get("cases", {}):
        analysis = orm_case(doc, case)
        if analysis is not None:
            add(f"ORM\n{case}", analysis["ratio"]["forkguard"])
    return labels, values, errs


def _draw_ratios(ax: Any, doc: dict[str, Any]) -> None:
    labels, values, errs = _ratio_bars(doc)
    for i, (v, e) in enumerate(zip(values, errs)):
        ax.bar(i, v, color=COLORS["forkguard"], yerr=e, capsize=4)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(
        HOT_TARGET, color="#cc3311", linestyle="--", linewidth=1, label=f"target {HOT_TARGET}"
    )
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("guarded / unguarded (median, Q1-Q3)")
    ax.set_title("Pool hot path and ORM path (forkguard as installed)", fontsize=10)
    ax.legend(fontsize=8)


def _draw_fork(ax: Any, fork: dict[str, Any]) -> None:
    backends = list(fork)
    for j, variant in enumerate(("manual", "forkguard")):
        ax.bar(
            [i + 0.4 * j for i in range(len(backends))],
            [fork[b]["ms"][variant]["median"] for b in backends],
            width=0.4,
            label="dispose(close=False) by hand" if variant == "manual" else "forkguard",
            color=COLORS["lazy"] if variant == "manual" else COLORS["forkguard"],
        )
    ax.set_xticks([i + 0.2 for i in range(len(backends))], backends)
    ax.set_ylabel("ms, fork() to first SELECT 1 in the child")
    ax.set_title(FORK_TITLE, fontsize=10)
    ax.legend(fontsize=8)


def _draw_cell(ax: Any, doc: dict[str, Any], server: str, workers: int) -> None:
    here = variants_in(doc, server, workers)
    width = 0.8 / max(1, len(here))
    for j, variant in enumerate(here):
        run = find_run(doc, server, workers, variant)
        ax.bar(
            [i + width * j for i in range(len(MEMORY_PHASES))],
            [mem(run, p) / 1024 for p in MEMORY_PHASES],
            width=width,
            color=COLORS[variant],
            label=VARIANT_LABELS[variant],
        )
    middle = width * (len(here) - 1) / 2
    ax.set_xticks(
        [i + middle for i in range(len(MEMORY_PHASES))],
        [PHASE_NAMES[p] for p in MEMORY_PHASES],
        fontsize=8,
    )
    ax.set_title(f"{server}, {workers} workers", fontsize=10)
    ax.set_ylabel("total PSS, master + workers (MB)")


def _save(plt: Any, fig: Any, path: str) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _overview(plt: Any, doc: dict[str, Any], img_dir: str) -> list[str]:
    fork = doc.get("forkcost", {}).get("backends", {})
    if not (doc.get("hotpath", {}) or fork or doc.get("orm")):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), width_ratios=(2, 1))
    _draw_ratios(axes[0], doc)
    _draw_fork(axes[1], fork)
    fig.tight_layout()
    return [_save(plt, fig, os.path.join(img_dir, IMG_OVERVIEW))]


def _memory(plt: Any, doc: dict[str, Any], img_dir: str) -> list[str]:
    cell_list = cells(doc)
    if not cell_list:
        return []
    fig, axes = plt.subplots(1, len(cell_list), figsize=(3.6 * len(cell_list), 3.8), squeeze=False)
    for ax, (server, workers) in zip(axes[0], cell_list):
        _draw_cell(ax, doc, server, workers)
    # The legend of the cell with the most variants names them all.
    widest = max(range(len(cell_list)), key=lambda i: len(variants_in(doc, *cell_list[i])))
    handles, labels = axes[0][widest].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    legend_rows = (len(labels) + 1) // 2
    fig.tight_layout(rect=(0, 0.04 + 0.045 * legend_rows, 1, 1))
    return [_save(plt, fig, os.path.join(img_dir, IMG_MEMORY))]


def charts(doc: dict[str, Any], img_dir: str) -> list[str]:
    """Write the PNG charts (matplotlib, Agg); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(img_dir, exist_ok=True)
    return _overview(plt, doc, img_dir) + _memory(plt, doc, img_dir)
