"""Which params set the compared runs apart, and how they split into configurations and pairs.

A configuration is every param that differs among the compared runs, seed aside: nothing is
pooled because a report only knew of model, task and adapter. A few keys are ignored because
they say where a run wrote its files or how it was recorded, not what was trained (IGNORED).

Pairing along an axis (`--by`): the by-key and every key whose value it determines form the
arm, across the runs or within each combination of the keys left to match (see arm_keys);
every other differing key, and the seed, must match for two runs to pair. So `--by model` on
encoder-vs-decoder (MiniLM + full + classifier or span head vs SmolLM2 + LoRA + generate) makes
adapter and head part of the arm and pairs the runs by task and seed, while `--by adapter` on an
adapter × lr grid pairs lora with full at the same lr.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tunelab.compare.runs import CompareError

# Why each ignored key does not split runs: the replication unit, run-specific locations, and
# settings that change how a run is watched or resumed, never what it computes.
IGNORED = {
    "seed": "the replication unit: spread is over seeds, pairs match on it",
    "paths.": "where a run keeps caches and checkpoints, not what it trains",
    "tracking.": "where and under which name a run is recorded",
    "trainer.enable_progress_bar": "what the console shows",
    "trainer.checkpoint_every_n_steps": "how often a run saves resume points",
}
MISSING = "—"                       # a param a run did not record (e.g. adapter.r of `full`)
UNSET = {"None", MISSING}           # a limit such as budget.tokens that is off
GROUP_ALIASES = ("model", "task", "adapter", "hardware", "objective", "optim", "data", "trainer")


def ignored_because(key: str) -> str | None:
    """Why `key` is not a configuration key, or None when it is one."""
    return next((why for k, why in IGNORED.items()
                 if key == k or (k.endswith(".") and key.startswith(k))), None)


def ignored(key: str) -> bool:
    return ignored_because(key) is not None


def param_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' params as strings, MISSING where a run did not record one."""
    cols = [c for c in runs.columns if c.startswith("params.")]
    frame = runs[cols].rename(columns=lambda c: c.removeprefix("params."))
    return frame.astype(object).where(frame.notna(), MISSING).astype(str)


def differing(params: pd.DataFrame) -> list[str]:
    return sorted(k for k in params.columns if params[k].nunique() > 1)


def determines(params: pd.DataFrame, key: str | list[str], other: str) -> bool:
    """True when every value of `key` (every combination, for several) goes with one value of
    `other` across these runs."""
    return bool((params.groupby(key)[other].nunique() <= 1).all())


def arm_keys(params: pd.DataFrame, keys: list[str], by: str) -> list[str]:
    """The by-key, the keys it determines across the runs (adapter with the model in
    encoder-vs-decoder), and the keys it determines within each combination of the keys left
    to match (the head an encoder uses per task: classifier for sentiment, span for qa), unless
    those alone determine them. Every stratum then holds one arm per by-value."""
    arm = [k for k in keys if k == by or determines(params, by, k)]
    for key in sorted((k for k in keys if k not in arm), key=lambda k: priority(k, None),
                      reverse=True):
        others = [k for k in keys if k not in arm and k != key]
        if others and determines(params, [by, *others], key) and \
                not determines(params, others, key):
            arm.append(key)
    extra = [k for k in arm if not determines(params, by, k)]
    for key in extra:   # a later key left the match keys: check the earlier ones again
        match = [k for k in keys if k not in arm]
        if match and not determines(params, [by, *match], key):
            arm.remove(key)
    return [k for k in keys if k in arm]


def priority(key: str, by: str | None) -> tuple[int, int, str]:
    """Which of keys that vary together names them: the by-key, then a group's name, then the
    shortest; so labels read `adapter=lora`, not `adapter.r=8`."""
    return (key != by, not key.endswith(".name"), len(key), key)


@dataclass(frozen=True)
class Grouping:
    """The keys of one comparison. `keys` name the configurations; `together[k]` are keys that
    vary exactly with `k` across the runs (`adapter.method` with `adapter.name`), shown, not
    used to split again; `arm` and `match` are set when pairing along `by`."""

    keys: list[str]
    together: dict[str, list[str]]
    ignored: list[str]
    by: str | None
    arm: list[str]
    match: list[str]

    def label(self, row: pd.Series) -> str:
        return ", ".join(f"{short(k)}={row[k]}" for k in self.keys) or "all runs"

    def arm_label(self, row: pd.Series) -> str:
        return ", ".join(f"{short(k)}={row[k]}" for k in self.keys if k in self.arm)

    def match_label(self, row: pd.Series) -> str:
        return ", ".join(f"{short(k)}={row[k]}" for k in self.match) or "—"


def short(key: str) -> str:
    """`adapter.name` reads `adapter`; any other key reads as itself."""
    return key.removesuffix(".name") if key.count(".") == 1 and key.endswith(".name") else key


def resolve_by(by: str, params: pd.DataFrame) -> str:
    """`adapter` → `adapter.name` (a config group), any other value is a param key."""
    key = f"{by}.name" if by in GROUP_ALIASES or f"{by}.name" in params.columns else by
    if key not in params.columns:
        raise CompareError(f"--by {by}: the runs record no param {key!r}; params that differ: "
                           f"{', '.join(k for k in differing(params) if not ignored(k))}")
    if ignored(key):
        raise CompareError(f"--by {by}: {key!r} is not a configuration key "
                           f"({ignored_because(key)})")
    return key


def grouping(params: pd.DataFrame, by: str | None) -> Grouping:
    """Split the differing keys into names, restatements, arm and match keys (see module doc)."""
    varying = differing(params)
    skipped = [k for k in varying if ignored(k)]
    varying = sorted((k for k in varying if not ignored(k)), key=lambda k: priority(k, by))
    keys: list[str] = []
    together: dict[str, list[str]] = {}
    for key in varying:
        same = next((k for k in keys if determines(params, k, key)
                     and determines(params, key, k)), None)
        if same is None:
            keys.append(key)
            together[key] = []
        else:
            together[same].append(key)
    keys.sort()
    together = {k: sorted(v) for k, v in together.items()}
    if by is None or by not in keys:
        return Grouping(keys, together, skipped, by, [], keys)
    arm = arm_keys(params, keys, by)
    return Grouping(keys, together, skipped, by, arm, [k for k in keys if k not in arm])
