"""The numbers of a comparison: per-configuration summaries, paired tests, the decision, Pareto.

Seeds are the unit of replication: a configuration is every differing param (see grouping), its
spread is over seeds, and a difference is taken seed by seed (same data order, same init of the
shared weights) so that seed-to-seed noise cancels out of it. With a handful of seeds only exact
or small-sample methods hold: a paired t-test, an exact sign-flip permutation test, and a
bootstrap interval only from MIN_CI_PAIRS pairs up (with two pairs it has three possible means).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from tunelab.compare.grouping import UNSET, Grouping, short
from tunelab.tracking import names

# What each configuration costs, in the order the report shows them; shown where recorded.
COSTS = {
    "params/trainable_pct": "trainable %",
    "params/adapter_mb": "adapter MB",
    "time/fit_seconds": "fit s",
    "perf/train_samples_per_sec": "samples/s",
    "perf/peak_mem_mb": "peak mem MB",
    "perf/energy_j": "energy J",
    "cost/usd": "USD",
    "budget/flops_used": "train FLOPs",
}
# Costs a Pareto frontier trades the task metric against (lower is better for each).
PARETO_COSTS = ["params/trainable_pct", "perf/peak_mem_mb", "time/fit_seconds", "perf/energy_j",
                "cost/usd", "budget/flops_used"]
# Keys under which metrics are not comparable (other data, other task) or budgets differ: the
# decision picks a best configuration within each combination of their values.
SCOPE_KEYS = ("task.name", "data.dataset", "data.subset", "data.train_file",
              "data.validation_file", "data.test_file")
BUDGET_KEYS = ("trainer.max_steps", "trainer.max_epochs", "budget.tokens", "budget.seconds",
               "budget.flops")
FRACTIONS = {"acc", "f1", "em", "precision", "recall"}     # a point is 0.01 of these
MIN_CI_PAIRS = 3
ALPHA = 0.05


def recorded(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    return [k for k in keys if k in frame.columns and frame[k].notna().any()]


def natural_order(value: str) -> tuple[float, str]:
    """Param values are strings: numbers sort as numbers (1e-05 before 0.001), the rest after."""
    try:
        return float(value), value
    except ValueError:
        return float("inf"), value


def tidy(runs: pd.DataFrame, params: pd.DataFrame, metric: str, g: Grouping) -> pd.DataFrame:
    """One row per run: labels of its configuration, arm and matched keys, every differing and
    budget param, the seed, the metric and the costs as numbers."""
    shown = g.keys + [k for ks in g.together.values() for k in ks]
    scope = [k for k in SCOPE_KEYS + BUDGET_KEYS if k in shown]
    def scope_label(row: pd.Series) -> str:
        return ", ".join(f"{short(k)}={row[k]}" for k in scope) or "all runs"

    out = pd.DataFrame({
        "run_id": runs["run_id"], "run": runs.get("tags.mlflow.runName", runs["run_id"]),
        "seed": params["seed"], "config": params.apply(g.label, axis=1),
        "scope": params.apply(scope_label, axis=1)})
    if g.arm:
        out["arm"] = params.apply(g.arm_label, axis=1)
        out["matched"] = params.apply(g.match_label, axis=1)
    for key in dict.fromkeys(shown + [k for k in BUDGET_KEYS if k in params.columns]):
        out[key] = params[key]
    for key in [metric, *COSTS]:
        column = f"metrics.{key}"
        out[key] = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    return out


def summarize(per_run: pd.DataFrame, metric: str, g: Grouping) -> pd.DataFrame:
    """Mean, std over seeds and the seeds per configuration; columns `<key>`, `<key>_std`."""
    keys = [metric, *COSTS]
    grouped = per_run.groupby(["scope", "config"], sort=False)
    first = grouped[g.keys].first() if g.keys else None
    table = pd.concat([x for x in [first, grouped[keys].mean(),
                                   grouped[keys].std().add_suffix("_std")] if x is not None],
                      axis=1)
    table.insert(0, "seeds", grouped.seed.agg(lambda s: ",".join(sorted(s, key=natural_order))))
    table.insert(0, "n", grouped.size())
    order = ["scope", *g.keys]
    return table.reset_index().sort_values(order, key=lambda col: col.map(natural_order),
                                           ignore_index=True)


def paired_test(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> dict:
    """a − b seed by seed: mean, the seed-to-seed sd of the differences, paired t-test and exact
    sign-flip p-values (from 2 pairs), percentile-bootstrap 95% CI (from MIN_CI_PAIRS pairs)."""
    diffs = a - b
    n = len(diffs)
    sd = float(diffs.std(ddof=1)) if n > 1 else float("nan")
    out = {"pairs": n, "delta": float(diffs.mean()) if n else float("nan"), "sd": sd,
           "p_t": float("nan"), "p_flip": float("nan"), "ci_low": float("nan"),
           "ci_high": float("nan")}
    if n >= 2 and sd > 0:
        out["p_t"] = float(sps.ttest_rel(a, b).pvalue)
    if n >= 2:
        out["p_flip"] = float(sps.permutation_test((diffs,), np.mean, n_resamples=np.inf,
                                                   permutation_type="samples").pvalue)
    if n >= MIN_CI_PAIRS:
        ci = sps.bootstrap((diffs,), np.mean, n_resamples=n_boot, method="percentile",
                           rng=seed).confidence_interval
        out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    return out


def pairs_of(per_run: pd.DataFrame, a: str, b: str, on: str = "config") -> pd.DataFrame:
    """Runs of `a` and `b` (values of column `on`) sharing a seed, one row per seed: of two
    runs of one side on one seed only the latest pairs (runs come newest first), so a seed is
    never counted twice."""
    left = per_run[per_run[on] == a].drop_duplicates("seed")
    right = per_run[per_run[on] == b].drop_duplicates("seed")
    return left.merge(right, on="seed", suffixes=("", "_base"))


def paired_deltas(per_run: pd.DataFrame, metric: str, g: Grouping,
                  baseline: str | None) -> pd.DataFrame:
    """Each arm minus the `baseline` arm (a value of the by-key) of the same matched keys and
    seed, per quantity; empty when the runs do not differ along the by-key."""
    columns = ["matched", "arm", "baseline", "quantity", "pairs", "delta", "sd", "p_t", "p_flip",
               "ci_low", "ci_high"]
    if not g.arm or baseline is None:
        return pd.DataFrame(columns=columns)
    rows = []
    for matched, stratum in per_run.groupby("matched", sort=True):
        base = stratum[stratum[g.by] == baseline]
        if base.empty:
            continue
        base_arm = base.arm.iloc[0]
        for arm in sorted(set(stratum.arm) - {base_arm}):
            pairs = pairs_of(stratum, arm, base_arm, on="arm")
            for key in [metric, *COSTS]:
                both = pairs[[key, f"{key}_base"]].dropna()
                if both.empty:
                    continue
                rows.append({"matched": matched, "arm": arm, "baseline": base_arm,
                             "quantity": key, **paired_test(both[key].to_numpy(float),
                                                            both[f"{key}_base"].to_numpy(float))})
    return pd.DataFrame(rows, columns=columns)


def unpaired(per_run: pd.DataFrame, g: Grouping, baseline: str | None) -> int:
    """Runs off the baseline arm with no baseline run of the same matched keys and seed."""
    if not g.arm or baseline is None:
        return 0
    base = per_run[per_run[g.by] == baseline][["matched", "seed"]].drop_duplicates()
    others = per_run[per_run[g.by] != baseline]
    return int(len(others) - len(others.merge(base, on=["matched", "seed"])))


def point_scale(metric: str) -> float:
    """Units per point of the metric: a percentage point for fractions, else one unit."""
    return 100.0 if names.metric_name(metric) in FRACTIONS else 1.0


def shared_budget(per_run: pd.DataFrame) -> str:
    """The budget params set (not None) and equal across `per_run`, e.g. `trainer.max_steps=12`;
    a budget that varies is named as such."""
    parts = []
    for key in BUDGET_KEYS:
        if key not in per_run.columns:
            continue
        values = set(per_run[key]) - UNSET
        if len(values) == 1:
            parts.append(f"{key}={values.pop()}")
        elif values:
            parts.append(f"{key} varies ({', '.join(sorted(values))})")
    return ", ".join(parts) or "no budget recorded"


def verdict(test: dict) -> str:
    """Whether a paired difference is significant, in words, never from too few seeds."""
    if test["pairs"] < 2:
        return f"too few seeds to test: {test['pairs']} shared seed(s), a paired test needs 2"
    if np.isnan(test["p_t"]):
        return "no seed-to-seed spread in the difference: the paired t-test is undefined"
    sig = "significant" if test["p_t"] < ALPHA else "not significant"
    return (f"{sig} at {ALPHA:.0%} (paired t-test p={test['p_t']:.3g}, exact sign-flip "
            f"p={test['p_flip']:.3g} over {test['pairs']} seeds; the sign-flip test cannot go "
            f"below {2 ** (1 - test['pairs']):.3g} with {test['pairs']} seeds)")


def decision(per_run: pd.DataFrame, summary: pd.DataFrame, metric: str,
             mode: str) -> pd.DataFrame:
    """Per scope: the best configuration by mean over seeds, and the best minus the runner-up
    paired on their shared seeds, with its verdict."""
    rows = []
    for scope, configs in summary.groupby("scope", sort=False):
        ranked = configs.sort_values(metric, ascending=mode == "min")
        best = ranked.iloc[0]
        row = {"scope": scope, "budget": shared_budget(per_run[per_run.scope == scope]),
               "best": best.config, "mean": best[metric], "std": best[f"{metric}_std"],
               "n": best.n, "runner_up": None}
        if len(ranked) > 1:
            runner = ranked.iloc[1]
            pairs = pairs_of(per_run, best.config, runner.config)[[metric, f"{metric}_base"]]
            test = paired_test(*(pairs.dropna().to_numpy(float).T))
            row.update(runner_up=runner.config, runner_mean=runner[metric],
                       tie=bool(runner[metric] == best[metric]), **test,
                       verdict=verdict(test))
        rows.append(row)
    return pd.DataFrame(rows)


def prices(summary: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """What the best configuration of each scope costs per point of the metric it gains over
    each other one (Δ cost / Δ points, means over seeds), for every recorded cost."""
    sign, scale = (1.0 if mode == "max" else -1.0), point_scale(metric)
    rows = []
    for scope, configs in summary.groupby("scope", sort=False):
        best = configs.sort_values(metric, ascending=mode == "min").iloc[0]
        for _, other in configs.iterrows():
            if other.config == best.config:
                continue
            gain = sign * (best[metric] - other[metric]) * scale
            for cost in recorded(configs, list(COSTS)):
                extra = best[cost] - other[cost]
                rows.append({"scope": scope, "best": best.config, "other": other.config,
                             "points": gain, "quantity": cost, "best_value": best[cost],
                             "other_value": other[cost], "extra": extra,
                             "per_point": extra / gain if gain else float("nan")})
    return pd.DataFrame(rows, columns=["scope", "best", "other", "points", "quantity",
                                       "best_value", "other_value", "extra", "per_point"])


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
    """Configuration means and stds with one `frontier <cost>` column per recorded cost; the
    frontier is drawn within each scope (metrics of other tasks or budgets do not compete)."""
    costs = recorded(summary, PARETO_COSTS)
    keep = ["scope", "config", "n", metric, f"{metric}_std"] + \
        [c for cost in costs for c in (cost, f"{cost}_std")]
    table = summary[keep].copy()
    for cost in costs:
        table[f"frontier {COSTS[cost]}"] = pd.concat(
            [frontier(part[metric], part[cost], mode) for _, part in table.groupby("scope")])
    return table


# Budget metrics a run may record per step, and the axis each gives quality against.
BUDGET_AXES = {"budget/tokens_used": "tokens", "budget/seconds_used": "seconds",
               "budget/flops_used": "FLOPs"}
WALL_AXIS = "wall s since the run's first metric"


def budget_curves(histories: pd.DataFrame, per_run: pd.DataFrame,
                  keys: list[str]) -> pd.DataFrame:
    """Long form (run, key, axis, step, x, y): each of `keys` against optimizer step and against
    every budget metric the run recorded, interpolated at the key's steps (a total recorded
    once is spread evenly over the steps, and its axis says so); without
    `budget/seconds_used`, against the wall clock MLflow stamped on each value."""
    rows = []
    for run_id, history in histories.groupby("run_id", sort=False):
        for key in keys:
            points = history[history.key == key].sort_values("step")
            if points.empty:
                continue
            steps = points.step.to_numpy(float)
            axes = {"optimizer step": steps}
            for budget, name in BUDGET_AXES.items():
                spent = history[history.key == budget].sort_values("step")
                if len(spent) >= 2:
                    axes[name] = np.interp(steps, spent.step.to_numpy(float), spent.value)
                elif len(spent) == 1 and spent.step.iloc[0] > 0:
                    # only the run's total: spent evenly over its steps (nothing at step 0)
                    axes[f"{name} (≈ total × step share)"] = \
                        steps * spent.value.iloc[0] / spent.step.iloc[0]
            if not any(a.startswith("seconds") for a in axes):
                axes[WALL_AXIS] = (points.timestamp.to_numpy(float) -
                                   history.timestamp.min()) / 1000
            for axis, x in axes.items():
                rows.append(pd.DataFrame({"run_id": run_id, "key": key, "axis": axis,
                                          "step": steps, "x": x, "y": points.value.to_numpy()}))
    if not rows:
        return pd.DataFrame(columns=["run_id", "key", "axis", "step", "x", "y", "config", "seed"])
    return pd.concat(rows, ignore_index=True).merge(per_run[["run_id", "config", "seed"]],
                                                    on="run_id")
