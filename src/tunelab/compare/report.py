"""The comparison report: tables and plots, written once as blocks, rendered as Markdown and HTML.

Both renderings come from the same blocks so the two files can never disagree. The numeric
tables are also written as CSV, for a user who wants the numbers rather than the prose.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tunelab.compare import plots
from tunelab.compare.runs import RunSet, metric_histories, metric_mode
from tunelab.compare.stats import (CONFIG, COSTS, PARETO_COSTS, paired_deltas, pareto_table,
                                   summarize, tidy)

Block = tuple[str, object]      # ("h2" | "p", text), ("table", DataFrame) or ("img", file name)


@dataclass
class Comparison:
    """Every number of one report, kept as frames so tests and notebooks can read them."""

    runs: RunSet
    metric: str
    mode: str
    baseline: str
    tidy: pd.DataFrame
    summary: pd.DataFrame
    deltas: pd.DataFrame
    pareto: pd.DataFrame
    curves: pd.DataFrame


def compare(runs: RunSet, metric: str, baseline: str = "full") -> Comparison:
    """All tables of a report from runs that recorded `metric`."""
    mode = metric_mode(runs, metric)
    per_run = tidy(runs.runs, metric)
    summary = summarize(per_run, metric)
    curves = metric_histories(per_run.run_id.tolist(), ["train/loss", metric])
    curves = curves.merge(per_run[["run_id", *CONFIG, "seed"]], on="run_id")
    return Comparison(runs, metric, mode, baseline, per_run, summary,
                      paired_deltas(per_run, metric, baseline),
                      pareto_table(summary, metric, mode), curves)


def mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def summary_view(c: Comparison) -> pd.DataFrame:
    view = c.summary[CONFIG + ["n"]].rename(columns={"n": "runs"})
    for key in [c.metric, *COSTS]:
        view[COSTS.get(key, key)] = [mean_std(m, s) for m, s in
                                     zip(c.summary[key], c.summary[f"{key}_std"])]
    return view


def deltas_view(c: Comparison) -> pd.DataFrame:
    d = c.deltas
    ci = [("–" if math.isnan(lo) else f"[{lo:+.4g}, {hi:+.4g}]")
          for lo, hi in zip(d.ci_low, d.ci_high)]
    return pd.DataFrame({"model": d.model, "task": d.task, "hardware": d.hardware,
                         "adapter": d.adapter, "quantity": [COSTS.get(q, q) for q in d.quantity],
                         "pairs": d.pairs, "Δ mean": [f"{v:+.4g}" for v in d.delta],
                         "95% CI": ci})


def pareto_view(c: Comparison) -> pd.DataFrame:
    view = c.pareto[CONFIG].copy()
    for key in [c.metric, *PARETO_COSTS]:
        view[COSTS.get(key, key)] = [f"{v:.4g}" for v in c.pareto[key]]
    for cost in PARETO_COSTS:
        name = f"frontier {COSTS[cost]}"
        view[name] = ["✓" if on else "" for on in c.pareto[name]]
    return view


def excluded_text(runs: RunSet) -> str:
    if not runs.excluded:
        return "No training run was excluded."
    parts = ", ".join(f"{n} ({why})" for why, n in runs.excluded.items())
    return f"Excluded {sum(runs.excluded.values())} training run(s): {parts}."


def pooled_text(c: Comparison) -> str:
    """Warn when runs that differ in other params (say optim.lr) share a configuration and seed:
    their mean and pairing then pool those settings together."""
    shared = c.tidy.duplicated(CONFIG + ["seed"], keep=False)
    if not shared.any():
        return ""
    return (f" {int(shared.sum())} run(s) share a configuration and seed with another run "
            "(they differ in other params) and are pooled; use one experiment per setting to "
            "keep them apart.")


def blocks(c: Comparison, out: Path) -> list[Block]:
    """The report's content, drawing its plots into `out` on the way."""
    better = "higher" if c.mode == "max" else "lower"
    content: list[Block] = [
        ("h1", f"Comparison: {c.runs.experiment}"),
        ("p", f"Task metric `{c.metric}` ({better} is better). Counted: {len(c.tidy)} FINISHED "
              f"training run(s) in {len(c.summary)} configuration(s). {excluded_text(c.runs)}"
              f"{pooled_text(c)}"),
        ("h2", "Configurations (mean ± std over seeds)"),
        ("table", summary_view(c)),
        ("h2", f"Paired differences against `{c.baseline}`"),
    ]
    if c.deltas.empty:
        content.append(("p", f"No pairs: no configuration shares model, task, hardware and seed "
                             f"with a `{c.baseline}` run."))
    else:
        content += [("p", "Each adapter minus the baseline run of the same model, task, hardware "
                          "and seed; 95% CI of the mean difference by bootstrap over pairs "
                          "(10,000 resamples; none with fewer than 2 pairs)."),
                    ("table", deltas_view(c)),
                    ("img", plots.deltas_plot(c.deltas, c.metric, out / "deltas.png").name)]
    content += [
        ("h2", "Pareto frontier"),
        ("p", f"A configuration is on the frontier when no other has a {better} or equal "
              f"`{c.metric}` at a lower or equal cost (means over seeds)."),
        ("table", pareto_view(c)),
        ("img", plots.pareto_plot(c.pareto, c.metric, out / "pareto.png").name),
        ("h2", "Learning curves"),
        ("p", "Mean over seeds against optimizer step, ±1 std shaded."),
        ("img", plots.curves_plot(c.curves, ["train/loss", c.metric],
                                  out / "learning_curves.png").name),
    ]
    return content


def to_markdown(content: list[Block]) -> str:
    marks = {"h1": "# ", "h2": "## "}
    parts = []
    for kind, value in content:
        if kind == "table":
            parts.append(value.to_markdown(index=False, disable_numparse=True))
        elif kind == "img":
            parts.append(f"![{value}]({value})")
        else:
            parts.append(marks.get(kind, "") + str(value))
    return "\n\n".join(parts) + "\n"


def to_html(content: list[Block], title: str) -> str:
    body = []
    for kind, value in content:
        if kind == "table":
            body.append(value.to_html(index=False, border=0))
        elif kind == "img":
            body.append(f'<img src="{html.escape(value)}" alt="{html.escape(value)}">')
        else:
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(value)))
            body.append(f"<{kind}>{text}</{kind}>")
    style = ("body{font-family:sans-serif;max-width:75em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}"
             "img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body) +
            "\n</body></html>\n")


def write_report(c: Comparison, out: Path) -> Path:
    """report.md, report.html, PNG plots and CSV tables under `out`; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    content = blocks(c, out)
    (out / "report.html").write_text(to_html(content, f"Comparison: {c.runs.experiment}"))
    c.summary.to_csv(out / "summary.csv", index=False)
    c.deltas.to_csv(out / "paired_deltas.csv", index=False)
    c.pareto.to_csv(out / "pareto.csv", index=False)
    c.tidy.to_csv(out / "runs.csv", index=False)
    markdown = out / "report.md"
    markdown.write_text(to_markdown(content))
    return markdown
