"""Figures of a comparison, drawn once and used by the report (PNG files and embedded) and the
notebook alike.

Figures are built with `matplotlib.figure.Figure`, not pyplot: saving then needs no display and
importing tunelab.compare never switches the backend of a notebook that uses it. Each
configuration keeps one colour, marker and line style across every figure, so overlapping
curves stay apart and a reader can follow one configuration from plot to plot.
"""

from __future__ import annotations

import io
from itertools import cycle

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tunelab.compare.stats import COSTS

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
          "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINES = ["-", "--", "-.", ":"]
LOG_X = {"params/trainable_pct"}    # a head or LoRA sits at 0.1-2 %, full fine-tuning at 100 %


def styles(names: list[str]) -> dict[str, dict]:
    """A distinct colour, marker and line style per name; the three cycle at different periods
    so no two of the first 40 names look alike."""
    combos = zip(cycle(COLORS), cycle(MARKERS), cycle(LINES))
    return {n: {"color": c, "marker": m, "linestyle": ls}
            for n, (c, m, ls) in zip(dict.fromkeys(names), combos)}


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def use_log(values: pd.Series, cost: str) -> bool:
    positive = values[values > 0]
    return cost in LOG_X or (len(positive) > 1 and positive.max() / positive.min() > 100)


def pareto_figure(table: pd.DataFrame, metric: str, look: dict[str, dict]) -> Figure:
    """One panel per recorded cost (three to a row): each configuration's mean with ±1 std over
    seeds on both axes, the frontier of each scope joined by a line."""
    costs = [c for c in COSTS if f"frontier {COSTS[c]}" in table.columns]
    cols = min(len(costs), 3)
    rows = -(-len(costs) // cols)
    fig = Figure(figsize=(5 * cols, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(costs):]:
        ax.set_visible(False)
    for ax, cost in zip(axes, costs):
        for _, row in table.iterrows():
            style = look[row.config]
            ax.errorbar(row[cost], row[metric], xerr=row[f"{cost}_std"],
                        yerr=row[f"{metric}_std"], fmt=style["marker"], color=style["color"],
                        capsize=3, label=row.config)
        for _, part in table.groupby("scope"):
            front = part[part[f"frontier {COSTS[cost]}"]].sort_values(cost)
            ax.plot(front[cost], front[metric], color="black", linewidth=1, alpha=0.6)
        if use_log(table[cost], cost):
            ax.set_xscale("log")
        ax.set(xlabel=f"{COSTS[cost]}" + (" (log)" if ax.get_xscale() == "log" else ""),
               ylabel=metric, title=f"{metric} vs {COSTS[cost]}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return fig


def deltas_figure(deltas: pd.DataFrame, metric: str) -> Figure:
    """Each arm's mean paired difference in the metric: 95% CI where there are enough pairs,
    ±1 seed-to-seed sd (thin, dashed) always, zero marked."""
    rows = deltas[deltas.quantity == metric].reset_index(drop=True)
    fig = Figure(figsize=(8, 1.5 + 0.6 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = range(len(rows))
    sd = rows.sd.fillna(0)
    ax.errorbar(rows.delta, y, xerr=sd, fmt="none", ecolor="gray", linestyle="--", capsize=2)
    ci = rows.ci_low.notna()
    if ci.any():
        ax.errorbar(rows.delta[ci], rows.index[ci],
                    xerr=[rows.delta[ci] - rows.ci_low[ci], rows.ci_high[ci] - rows.delta[ci]],
                    fmt="o", color="tab:blue", capsize=5, linewidth=2, label="95% CI")
    if (~ci).any():
        ax.plot(rows.delta[~ci], rows.index[~ci], "o", color="tab:orange",
                label="too few seeds for a CI")
    ax.axvline(0, color="gray", linestyle=":")
    ax.set_yticks(list(y), [f"{r.arm} − {r.baseline}\n[{r.matched}] ({r.pairs} pairs)"
                            for r in rows.itertuples()], fontsize=7)
    ax.set_xlabel(f"Δ {metric} (paired by seed; dashed: ±1 sd over seeds)")
    ax.legend(fontsize=7)
    return fig


def curves_figure(curves: pd.DataFrame, look: dict[str, dict]) -> Figure:
    """Rows: the plotted metrics; columns: the budget axes recorded. Per configuration the mean
    over seeds at each step, ±1 std shaded."""
    keys = list(dict.fromkeys(curves.key))
    axes_names = list(dict.fromkeys(curves.axis))
    fig = Figure(figsize=(4.5 * len(axes_names), 3.5 * len(keys)), layout="constrained")
    grid = fig.subplots(len(keys), len(axes_names), squeeze=False)
    for (i, key), (j, axis) in ((a, b) for a in enumerate(keys) for b in enumerate(axes_names)):
        ax = grid[i][j]
        part = curves[(curves.key == key) & (curves.axis == axis)]
        for config, group in part.groupby("config", sort=False):
            mean = group.groupby("step").agg(x=("x", "mean"), y=("y", "mean"), sd=("y", "std"))
            style = look[config]
            ax.plot(mean.x, mean.y, markersize=4, label=config, **style)
            ax.fill_between(mean.x, mean.y - mean.sd.fillna(0), mean.y + mean.sd.fillna(0),
                            color=style["color"], alpha=0.15)
        ax.set(xlabel=axis, ylabel=key)
        ax.grid(alpha=0.3)
    grid[0][0].legend(fontsize=7)
    return fig


def search_figure(curves: pd.DataFrame, metric: str, look: dict[str, dict]) -> Figure:
    """Per arm of a study: each search trial's metric (faint) and the best so far (line)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for arm, group in curves.groupby("arm", sort=True):
        style = look[arm]
        ax.plot(group.trial, group.value, style["marker"], color=style["color"], alpha=0.35)
        ax.step(group.trial, group.best_so_far, where="post", color=style["color"],
                linestyle=style["linestyle"], label=f"{arm}: best so far")
    ax.set(xlabel="search trial", ylabel=metric, title="search: best so far against trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
