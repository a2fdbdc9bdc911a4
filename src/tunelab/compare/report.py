"""The comparison report: tables and plots, written once as blocks, rendered as Markdown and HTML.

Both renderings come from the same blocks so the two files can never disagree; the notebook
shows the same views and figures. The HTML embeds its plots as data URIs, so the one file shows
everything wherever it is opened (mailed, or as an MLflow artifact). The numeric tables are also
written as CSV, for a user who wants the numbers rather than the prose.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tunelab.compare import plots
from tunelab.compare.grouping import IGNORED, Grouping, grouping, param_frame, resolve_by
from tunelab.compare.runs import CompareError, RunSet, metric_histories, metric_mode
from tunelab.compare.stats import (COSTS, MIN_CI_PAIRS, BUDGET_AXES, budget_curves, decision,
                                   natural_order, paired_deltas, pareto_table, point_scale, prices,
                                   summarize, tidy, unpaired)
from tunelab.compare.study import Study, studies
from tunelab.tracking import names

# ("h1" | "h2" | "h3" | "p", text), ("table", DataFrame) or ("img", (file name, PNG bytes))
Block = tuple[str, object]
DEFAULT_BY = "adapter"


@dataclass
class Comparison:
    """Every number of one report, kept as frames so tests and notebooks can read them."""

    runs: RunSet
    metric: str
    mode: str
    grouping: Grouping
    baseline: str | None
    tidy: pd.DataFrame
    summary: pd.DataFrame
    deltas: pd.DataFrame
    unpaired: int
    decision: pd.DataFrame
    prices: pd.DataFrame
    pareto: pd.DataFrame
    curves: pd.DataFrame
    studies: list[Study]

    @property
    def look(self) -> dict[str, dict]:
        return plots.styles(self.summary.config.tolist())


def default_baseline(per_run: pd.DataFrame, by: str) -> str | None:
    """`full` when pairing adapters and there is one (what PEFT is measured against), else the
    first value of the by-key in sorted order."""
    if by not in per_run.columns or per_run[by].nunique() < 2:
        return None
    values = sorted(set(per_run[by]), key=natural_order)
    return "full" if by == "adapter.name" and "full" in values else values[0]


def curve_keys(metric: str) -> list[str]:
    """The task metric over training (its validation twin when comparing a test metric, which
    is recorded once) and the training loss."""
    return [metric.replace("test/", "val/", 1), "train/loss"]


def compare(runs: RunSet, metric: str, by: str = DEFAULT_BY,
            baseline: str | None = None) -> Comparison:
    """All tables of a report from runs that recorded `metric`, paired along param `by`."""
    params = param_frame(runs.runs)
    by_key = resolve_by(by, params)
    g = grouping(params, by_key)
    mode = metric_mode(runs, metric)
    per_run = tidy(runs.runs, params, metric, g)
    base = baseline if baseline is not None else default_baseline(per_run, by_key)
    if baseline is not None and baseline not in set(params[by_key]):
        raise CompareError(f"no run with baseline {by_key}={baseline!r}; values: "
                           f"{', '.join(sorted(set(params[by_key])))}")
    summary = summarize(per_run, metric, g)
    keys = curve_keys(metric)
    histories = metric_histories(per_run.run_id.tolist(), keys + list(BUDGET_AXES))
    monitor = names.metric_name(metric)
    return Comparison(runs, metric, mode, g, base, per_run, summary,
                      paired_deltas(per_run, metric, g, base), unpaired(per_run, g, base),
                      decision(per_run, summary, metric, mode), prices(summary, metric, mode),
                      pareto_table(summary, metric, mode),
                      budget_curves(histories, per_run, keys), studies(runs, monitor, mode))


def num(value: float, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.4g}" if sign else f"{value:.4g}"


def mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return num(mean) if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def ci_text(pairs: int, low: float, high: float) -> str:
    if pairs < MIN_CI_PAIRS:
        return f"too few seeds ({pairs} pairs; needs {MIN_CI_PAIRS})"
    return f"[{low:+.4g}, {high:+.4g}]"


def summary_view(c: Comparison) -> pd.DataFrame:
    view = c.summary[["scope", "config", "n", "seeds"]].rename(columns={"n": "runs"})
    for key in [c.metric, *COSTS]:
        if c.summary[key].notna().any():
            view[COSTS.get(key, key)] = [mean_std(m, s) for m, s in
                                         zip(c.summary[key], c.summary[f"{key}_std"])]
    return view


def tests_view(d: pd.DataFrame) -> pd.DataFrame:
    """Paired differences with their seed-to-seed spread, tests and interval, as text."""
    return pd.DataFrame({
        "quantity": [COSTS.get(q, q) for q in d.quantity], "pairs": d.pairs,
        "Δ mean": [num(v, True) for v in d.delta], "sd over seeds": [num(v) for v in d.sd],
        "p (paired t)": [num(v) for v in d.p_t], "p (sign-flip)": [num(v) for v in d.p_flip],
        "95% CI": [ci_text(n, lo, hi) for n, lo, hi in zip(d.pairs, d.ci_low, d.ci_high)]})


def deltas_view(c: Comparison) -> pd.DataFrame:
    d = c.deltas.reset_index(drop=True)
    return pd.concat([d[["matched", "arm", "baseline"]], tests_view(d)], axis=1)


def decision_view(c: Comparison) -> pd.DataFrame:
    d = c.decision
    tie = d.get("tie", pd.Series(False, index=d.index)).fillna(False).astype(bool)
    view = pd.DataFrame({"scope": d.scope, "budget": d.budget,
                         "best": [f"{b} (tie)" if t else b for b, t in zip(d.best, tie)],
                         c.metric: [mean_std(m, s) for m, s in zip(d["mean"], d["std"])],
                         "seeds": d.n, "runner-up": d.runner_up.fillna("–")})
    if "delta" in d.columns:
        view["Δ vs runner-up"] = [num(v, True) for v in d.delta]
        view["sd over seeds"] = [num(v) for v in d.sd]
        view["p (paired t)"] = [num(v) for v in d.p_t]
        view["95% CI"] = [ci_text(int(n), lo, hi) if pd.notna(n) else "–"
                          for n, lo, hi in zip(d.pairs, d.ci_low, d.ci_high)]
    return view


def prices_view(c: Comparison) -> pd.DataFrame:
    """One row per configuration the best is weighed against: the points it gains, and per
    recorded cost the best's extra and that extra per point."""
    unit = "pp" if point_scale(c.metric) == 100 else "unit"
    rows = []
    for (scope, best, other), part in c.prices.groupby(["scope", "best", "other"], sort=False):
        row = {"scope": scope, "best": best, "vs": other,
               f"{c.metric} gain ({unit})": num(part.points.iloc[0], True)}
        for r in part.itertuples():
            row[f"Δ {COSTS[r.quantity]} (per {unit})"] = \
                f"{num(r.extra, True)} ({num(r.per_point, True)})"
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_view(c: Comparison) -> pd.DataFrame:
    table = c.pareto
    view = table[["scope", "config", "n"]].rename(columns={"n": "runs"})
    costs = [k for k in COSTS if f"frontier {COSTS[k]}" in table.columns]
    for key in [c.metric, *costs]:
        view[COSTS.get(key, key)] = [mean_std(m, s) for m, s in
                                     zip(table[key], table[f"{key}_std"])]
    for cost in costs:
        name = f"frontier {COSTS[cost]}"
        view[name] = ["✓" if on else "" for on in table[name]]
    return view


def excluded_text(runs: RunSet) -> str:
    if not runs.excluded:
        return "No training run was excluded."
    parts = ", ".join(f"{n} ({why})" for why, n in runs.excluded.items())
    return f"Excluded {sum(runs.excluded.values())} training run(s): {parts}."


def with_together(g: Grouping, key: str) -> str:
    """`key` and the keys that vary exactly alike with it, e.g. `adapter.method` with
    `adapter.name`."""
    extra = g.together.get(key, [])
    return f"`{key}`" + (f" (with {', '.join(f'`{x}`' for x in extra)} varying alike)"
                         if extra else "")


def keys_text(g: Grouping) -> str:
    """Which params make the configurations, and which were not allowed to."""
    made = (f"Configurations are every param that differs among these runs: "
            f"{', '.join(with_together(g, k) for k in g.keys)}." if g.keys else
            "The runs differ in no param but the seed: one configuration.")
    rules = "; ".join(f"`{k}{'*' if k.endswith('.') else ''}` ({why})"
                      for k, why in IGNORED.items())
    named = [k for k in g.ignored if k != "seed"]
    differ = f" Of those, {', '.join(f'`{k}`' for k in named)} differed." if named else ""
    return f"{made} Not configuration keys: {rules}.{differ} Nothing else is pooled."


def pairing_text(c: Comparison) -> str:
    g = c.grouping
    if not g.arm or c.baseline is None:
        return (f"The runs do not differ in `{g.by}`, so there is nothing to pair along it; "
                f"pass `--by` one of: {', '.join(g.keys) or '(no differing param)'}.")
    arm = ", ".join(with_together(g, k) for k in g.arm)
    match = ", ".join(f"`{k}`" for k in g.match)
    sentence = (f"Pairs along `{g.by}` against `{g.by}={c.baseline}`: the arm is {arm} (keys "
                f"whose value `{g.by}` determines, across these runs or within each combination "
                f"of the matched keys, change with it: not a mismatch); two runs pair when they "
                f"share {match + ' and ' if match else ''}"
                f"the seed. Δ is arm minus baseline, seed by seed; sd is the seed-to-seed spread "
                f"of those differences; p-values from a paired t-test and an exact sign-flip "
                f"permutation test; 95% CI by percentile bootstrap over pairs (10,000 "
                f"resamples), from {MIN_CI_PAIRS} pairs up.")
    if c.unpaired:
        sentence += f" {c.unpaired} run(s) had no baseline partner and are in no pair."
    few = c.deltas[c.deltas.pairs < MIN_CI_PAIRS]
    if not few.empty:
        sentence += (f" Too few seeds for an interval where a comparison has fewer than "
                     f"{MIN_CI_PAIRS} pairs ({few.pairs.min()} here): run more seeds.")
    return sentence


def duplicates_text(c: Comparison) -> str:
    shared = c.tidy.duplicated(["config", "seed"], keep=False)
    if not shared.any():
        return ""
    return (f" {int(shared.sum())} run(s) share configuration and seed with another: they "
            f"differ only in ignored keys or in unrecorded data; they count as separate runs "
            f"in the means, and only the latest of them pairs.")


def decision_text(c: Comparison, row: pd.Series) -> str:
    text = (f"Scope {row.scope}, budget {row.budget}: the best is `{row.best}`, "
            f"`{c.metric}` {mean_std(row['mean'], row['std'])} over {row.n} seed(s).")
    if row.runner_up is None or (isinstance(row.runner_up, float) and math.isnan(row.runner_up)):
        return text + " It is the only configuration here."
    if row.tie:
        text = (f"Scope {row.scope}, budget {row.budget}: no best, `{row.best}` and "
                f"`{row.runner_up}` tie at `{c.metric}` {num(row['mean'])} (means over seeds).")
    text += (f" Against the runner-up `{row.runner_up}` ({num(row.runner_mean)}): Δ "
             f"{num(row.delta, True)}, seed-to-seed sd {num(row.sd)}; {row.verdict}.")
    if row.pairs < MIN_CI_PAIRS:
        return text + f" Too few seeds for an interval ({row.pairs} pairs; needs {MIN_CI_PAIRS})."
    return text + f" 95% CI {ci_text(row.pairs, row.ci_low, row.ci_high)}."


def decision_blocks(c: Comparison) -> list[Block]:
    better = "higher" if c.mode == "max" else "lower"
    content: list[Block] = [("h2", "Decision")]
    content += [("p", decision_text(c, row)) for _, row in c.decision.iterrows()]
    content.append(("table", decision_view(c)))
    if not c.prices.empty:
        unit = "percentage point" if point_scale(c.metric) == 100 else "unit"
        content += [("h3", f"What the best costs per {unit} of `{c.metric}`"),
                    ("p", "Means over seeds: the best's cost minus the other's, divided by the "
                          "points it gains (negative: the best is also cheaper)."),
                    ("table", prices_view(c))]
    content.append(("h3", "Pareto frontier"))
    if not any(col.startswith("frontier ") for col in c.pareto.columns):
        return content + [("p", "The runs record no cost to trade the metric against.")]
    content += [("p", f"A configuration is on the frontier of its scope when no other has a "
                      f"{better} or equal `{c.metric}` at a lower or equal cost (means over "
                      f"seeds; bars ±1 std over seeds on both axes; trainable % on a log axis)."),
                ("table", pareto_view(c)),
                ("img", ("pareto.png", plots.png(plots.pareto_figure(c.pareto, c.metric,
                                                                     c.look))))]
    return content


def study_blocks(study: Study) -> list[Block]:
    settings = ", ".join(f"{k}={v}" for k, v in sorted(study.settings.items()))
    content: list[Block] = [
        ("h2", f"Study {study.study_id}"),
        ("p", f"Budget kind: {study.budget}. Each arm is tuned by its search trials on "
              f"validation, then its best values re-run on fresh seeds and scored on test."
              + (f" Study settings: {settings}." if settings else "")),
        ("table", study.arms.map(lambda v: num(v) if isinstance(v, float) else v))]
    if not study.search.empty:
        metric = next(c for c in study.arms.columns if c.startswith("best search "))
        look = plots.styles(sorted(set(study.search.arm)))
        figure = plots.search_figure(study.search, metric.removeprefix("best search "), look)
        content.append(("img", (f"study-{study.study_id}-search.png", plots.png(figure))))
    if not study.confirm.empty:
        content += [("h3", "Confirm runs (test)"),
                    ("table", study.confirm.map(lambda v: num(v) if isinstance(v, float)
                                                else v))]
    if not study.tests.empty:
        content += [("p", "Each arm minus the first on the confirm seeds they share."),
                    ("table", pd.concat([study.tests[["arm", "baseline"]],
                                         tests_view(study.tests)], axis=1))]
    return content


def blocks(c: Comparison) -> list[Block]:
    """The report's content: the decision first, then what it rests on."""
    better = "higher" if c.mode == "max" else "lower"
    content: list[Block] = [
        ("h1", f"Comparison: {c.runs.experiment}"),
        ("p", f"Task metric `{c.metric}` ({better} is better). Counted: {len(c.tidy)} FINISHED "
              f"training run(s) in {len(c.summary)} configuration(s). {excluded_text(c.runs)}"
              f"{duplicates_text(c)}"),
        ("p", keys_text(c.grouping)),
        *decision_blocks(c),
    ]
    for study in c.studies:
        content += study_blocks(study)
    content += [("h2", "Configurations (mean ± std over seeds)"), ("table", summary_view(c)),
                ("h2", f"Paired differences along `{c.grouping.by}`"), ("p", pairing_text(c))]
    if not c.deltas.empty:
        content += [("table", deltas_view(c)),
                    ("img", ("deltas.png", plots.png(plots.deltas_figure(c.deltas, c.metric))))]
    if not c.curves.empty:
        axes = ", ".join(dict.fromkeys(c.curves.axis))
        content += [("h2", "Quality against budget"),
                    ("p", f"Mean over seeds per configuration, ±1 std shaded, against: {axes} "
                          f"(what the runs recorded; steps are optimizer steps)."),
                    ("img", ("learning_curves.png",
                             plots.png(plots.curves_figure(c.curves, c.look))))]
    return content


def to_markdown(content: list[Block]) -> str:
    marks = {"h1": "# ", "h2": "## ", "h3": "### "}
    parts = []
    for kind, value in content:
        if kind == "table":
            parts.append(value.to_markdown(index=False, disable_numparse=True))
        elif kind == "img":
            parts.append(f"![{value[0]}]({value[0]})")
        else:
            parts.append(marks.get(kind, "") + str(value))
    return "\n\n".join(parts) + "\n"


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def to_html(content: list[Block], title: str) -> str:
    """One self-contained page: styles inline, every plot a data URI, no other file read."""
    body = []
    for kind, value in content:
        if kind == "table":
            body.append(value.to_html(index=False, border=0))
        elif kind == "img":
            body.append(f'<img src="{data_uri(value[1])}" alt="{html.escape(value[0])}">')
        else:
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(value)))
            body.append(f"<{kind}>{text}</{kind}>")
    style = ("body{font-family:sans-serif;max-width:90em;margin:2em auto}"
             "table{border-collapse:collapse;font-size:.9em}"
             "td,th{padding:.2em .6em;border-bottom:1px solid #ddd}img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body) +
            "\n</body></html>\n")


def write_report(c: Comparison, out: Path) -> Path:
    """report.md (+ PNG files), self-contained report.html and CSV tables under `out`;
    returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    content = blocks(c)
    for kind, value in content:
        if kind == "img":
            (out / value[0]).write_bytes(value[1])
    (out / "report.html").write_text(to_html(content, f"Comparison: {c.runs.experiment}"))
    for name, frame in [("summary", c.summary), ("paired_deltas", c.deltas),
                        ("decision", c.decision), ("prices", c.prices), ("pareto", c.pareto),
                        ("runs", c.tidy)]:
        frame.to_csv(out / f"{name}.csv", index=False)
    for study in c.studies:
        study.arms.to_csv(out / f"study-{study.study_id}-arms.csv", index=False)
        study.search.to_csv(out / f"study-{study.study_id}-search.csv", index=False)
    markdown = out / "report.md"
    markdown.write_text(to_markdown(content))
    return markdown
