"""PNG plots of a comparison.

Figures are built with `matplotlib.figure.Figure`, not pyplot: saving then needs no display and
importing tunelab.compare never switches the backend of a notebook that uses it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from tunelab.compare.stats import CONFIG, COSTS, PARETO_COSTS


def label(row: pd.Series, varying: list[str]) -> str:
    """Name a configuration by the parts that differ across the report, e.g. `lora`."""
    return "-".join(str(row[c]) for c in varying) or str(row["adapter"])


def varying_parts(frame: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG if frame[c].nunique() > 1]


def pareto_plot(table: pd.DataFrame, metric: str, path: Path) -> Path:
    """One scatter per cost: configurations, with the frontier joined by a line."""
    varying = varying_parts(table)
    fig = Figure(figsize=(5 * len(PARETO_COSTS), 4))
    axes = fig.subplots(1, len(PARETO_COSTS))
    for ax, cost in zip(axes, PARETO_COSTS):
        on = table[f"frontier {COSTS[cost]}"]
        ax.scatter(table[cost], table[metric], c=["tab:red" if f else "tab:gray" for f in on])
        front = table[on].sort_values(cost)
        ax.plot(front[cost], front[metric], color="tab:red", linewidth=1)
        for _, row in table.iterrows():
            ax.annotate(label(row, varying), (row[cost], row[metric]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(COSTS[cost])
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {COSTS[cost]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def deltas_plot(deltas: pd.DataFrame, metric: str, path: Path) -> Path:
    """Each adapter's mean paired difference in the metric with its 95% CI, zero marked."""
    rows = deltas[deltas.quantity == metric].reset_index(drop=True)
    varying = [c for c in ["model", "task", "hardware", "adapter"] if rows[c].nunique() > 1]
    fig = Figure(figsize=(6, 1 + 0.5 * len(rows)))
    ax = fig.subplots()
    err = [(rows.delta - rows.ci_low).fillna(0), (rows.ci_high - rows.delta).fillna(0)]
    ax.errorbar(rows.delta, range(len(rows)), xerr=err, fmt="o", capsize=4)
    ax.axvline(0, color="gray", linestyle="--")
    ax.set_yticks(range(len(rows)), [label(r, varying) for _, r in rows.iterrows()])
    ax.set_xlabel(f"Δ {metric} vs {rows.baseline.iloc[0]} (paired by seed, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def curves_plot(curves: pd.DataFrame, keys: list[str], path: Path) -> Path:
    """Per key, each configuration's mean over seeds against optimizer step, ±1 std shaded."""
    varying = varying_parts(curves)
    fig = Figure(figsize=(6 * len(keys), 4))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for config, group in curves[curves.key == key].groupby(CONFIG, sort=True):
            stats = group.groupby("step")["value"].agg(["mean", "std"]).fillna({"std": 0.0})
            name = label(pd.Series(dict(zip(CONFIG, config))), varying)
            ax.plot(stats.index, stats["mean"], marker=".", label=name)
            ax.fill_between(stats.index, stats["mean"] - stats["std"],
                            stats["mean"] + stats["std"], alpha=0.2)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
