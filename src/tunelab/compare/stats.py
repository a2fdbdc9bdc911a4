"""The numbers of a comparison: per-configuration summaries, paired deltas, Pareto frontiers.

Seeds are the unit of replication: a configuration is model × task × adapter × hardware, its
spread is over seeds, and a difference between adapters is taken seed by seed (same data order,
same init of the shared weights) so that seed-to-seed noise cancels out of the comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tunelab.compare.runs import GROUP_KEYS

# What each configuration costs, in the order the report shows them.
COSTS = {
    "params/trainable_pct": "trainable %",
    "params/adapter_mb": "adapter MB",
    "perf/train_samples_per_sec": "samples/s",
    "perf/peak_mem_mb": "peak mem MB",
    "time/fit_seconds": "fit s",
}
# Costs a Pareto frontier trades the task metric against (lower is better for each).
PARETO_COSTS = ["params/trainable_pct", "perf/peak_mem_mb", "time/fit_seconds"]
CONFIG = ["model", "task", "adapter", "hardware"]


def tidy(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run: the configuration, the seed, the metric and the costs, as numbers."""
    out = pd.DataFrame({name: runs[f"params.{key}"] for name, key in zip(CONFIG, GROUP_KEYS)})
    out["seed"] = runs["params.seed"]
    out["run_id"] = runs["run_id"]
    for key in [metric, *COSTS]:
        column = f"metrics.{key}"
        out[key] = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    return out


def summarize(tidy_runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std over seeds and run count per configuration; columns `<key>`, `<key>_std`, `n`."""
    keys = [metric, *COSTS]
    grouped = tidy_runs.groupby(CONFIG, sort=True)
    means = grouped[keys].mean()
    stds = grouped[keys].std().add_suffix("_std")
    table = pd.concat([means, stds], axis=1)
    table.insert(0, "n", grouped.size())
    return table.reset_index()


def bootstrap_ci(diffs: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean of `diffs`; NaN when fewer than two pairs."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n_boot, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_deltas(tidy_runs: pd.DataFrame, metric: str, baseline: str,
                  n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Each adapter minus `baseline`, matched by model, task, hardware and seed, per quantity."""
    match = ["model", "task", "hardware", "seed"]
    base = tidy_runs[tidy_runs.adapter == baseline]
    others = tidy_runs[tidy_runs.adapter != baseline]
    pairs = others.merge(base, on=match, suffixes=("", "_base"))
    rows = []
    for (model, task, hardware, adapter), group in pairs.groupby(
            ["model", "task", "hardware", "adapter"], sort=True):
        for key in [metric, *COSTS]:
            diffs = (group[key] - group[f"{key}_base"]).dropna().to_numpy()
            if len(diffs) == 0:
                continue
            low, high = bootstrap_ci(diffs, n_boot, seed)
            rows.append({"model": model, "task": task, "hardware": hardware, "adapter": adapter,
                         "baseline": baseline, "quantity": key, "pairs": len(diffs),
                         "delta": float(diffs.mean()), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["model", "task", "hardware", "adapter", "baseline",
                                       "quantity", "pairs", "delta", "ci_low", "ci_high"])


def frontier(values: pd.Series, costs: pd.Series, mode: str) -> pd.Series:
    """True where no other point is at least as good on both axes and strictly better on one."""
    sign = 1.0 if mode == "max" else -1.0
    score, cost = sign * values.to_numpy(float), costs.to_numpy(float)
    valid = ~(np.isnan(score) | np.isnan(cost))
    on = np.zeros(len(score), dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid & (np.arange(len(score)) != i)
        dominated = others & (score >= score[i]) & (cost <= cost[i]) & \
            ((score > score[i]) | (cost < cost[i]))
        on[i] = not dominated.any()
    return pd.Series(on, index=values.index)


def pareto_table(summary: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Configuration means with one `frontier <cost>` column per cost the metric trades against."""
    table = summary[CONFIG + [metric, *PARETO_COSTS]].copy()
    for cost in PARETO_COSTS:
        table[f"frontier {COSTS[cost]}"] = frontier(table[metric], table[cost], mode)
    return table
