"""Where text comes from: local files, a Hub dataset, or tunelab's own generated data.

`load_splits` returns raw `datasets` splits (train, validation, optional test) plus a digest of
exactly the data read, which goes into the run's config hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from omegaconf import DictConfig

from tunelab import tasks
from tunelab.config import ConfigError
from tunelab.data import synthetic

FILE_BUILDERS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".json": ("json", {}),
                 ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
SPLIT_KEYS = {"train": "data.train_file", "validation": "data.validation_file",
              "test": "data.test_file"}


@dataclass
class RawData:
    splits: datasets.DatasetDict
    digest: str                 # sha256 over what was read, for the config hash
    source: str                 # human-readable origin, for the MLflow dataset input
    files: dict[str, str]       # split -> the user's local file, when the data came from files
    origins: dict[str, tuple[str, str | None]]  # split -> (Hub id or datasets builder, data file)
    # split -> how its rows were taken from what was read (held out of train, first N rows);
    # the digest covers what was read, this covers which rows of it each split holds
    selection: dict[str, list] = field(default_factory=dict)


def check_columns(raw: RawData, wanted: dict[str, str]) -> None:
    """Every split has every wanted column; the error names the config key, the file and the
    columns that do exist."""
    for split, ds in raw.splits.items():
        where = raw.files.get(split, raw.source)
        for key, column in wanted.items():
            if column not in ds.column_names:
                raise ConfigError(key, column, f"a column of the {split} split ({where}); "
                                               f"it has {ds.column_names}")


def load_splits(data: DictConfig, task: DictConfig, cache_dir: Path) -> RawData:
    if data.train_file:
        raw = _from_files(data)
    elif data.dataset:
        raw = _from_hub(data)
    else:
        raw = _generated(data, task, cache_dir)
    unnest(raw, data, task)
    if "validation" not in raw.splits:
        held = raw.splits["train"].train_test_split(test_size=data.validation_fraction, seed=0)
        raw.splits["train"], raw.splits["validation"] = held["train"], held["test"]
        raw.origins["validation"] = raw.origins["train"]
        for split in ("train", "validation"):
            raw.selection.setdefault(split, []).append(
                f"held out {data.validation_fraction} of train (seed 0)")
    for split, limit in (("train", data.max_train_samples), ("validation", data.max_eval_samples),
                         ("test", data.max_eval_samples)):
        if limit and split in raw.splits and len(raw.splits[split]) > limit:
            raw.splits[split] = raw.splits[split].select(range(limit))
            raw.selection.setdefault(split, []).append(f"first {limit} rows")
    for split, ds in raw.splits.items():
        if len(ds) == 0:
            key = SPLIT_KEYS[split] if raw.files else "data.dataset"
            raise ConfigError(key, raw.files.get(split, raw.source), f"the {split} split is empty")
    return raw


def unnest(raw: RawData, data: DictConfig, task: DictConfig) -> None:
    """Splits that nest their rows in the task kind's native format (a SQuAD JSON file is one row,
    `data`) become one row per example under the configured column names, so holding out part of
    train and data.max_*_samples count examples, not files."""
    kind = tasks.kind(task.kind)
    if kind.unnest is None:
        return
    names = kind.column_map(data)
    for split, ds in raw.splits.items():
        if kind.is_nested(data, ds.column_names):
            rows = tasks.load(kind.unnest)(ds)
            raw.splits[split] = datasets.Dataset.from_list(
                [{names.get(key, key): value for key, value in row.items()} for row in rows])


def _from_files(data: DictConfig) -> RawData:
    splits, digest, files, origins = {}, hashlib.sha256(), {}, {}
    for split, key in SPLIT_KEYS.items():
        path = data[key.split(".")[1]]
        if not path:
            continue
        file = Path(path).expanduser()
        if file.suffix.lower() not in FILE_BUILDERS:
            raise ConfigError(key, path, f"a file ending in one of {sorted(FILE_BUILDERS)}")
        if not file.is_file():
            raise ConfigError(key, path, "an existing file (relative paths start at the working "
                                         f"directory, {Path.cwd()})")
        builder, kwargs = FILE_BUILDERS[file.suffix.lower()]
        try:
            splits[split] = datasets.load_dataset(builder, data_files={split: str(file.resolve())},
                                                  split=split, **kwargs)
        except Exception as err:  # noqa: BLE001 - datasets raises many types for unreadable files
            raise ConfigError(key, path, f"a readable {file.suffix} file ({err})") from None
        digest.update(split.encode() + file.read_bytes())
        files[split] = str(file.resolve())
        origins[split] = (builder, files[split])
    return RawData(datasets.DatasetDict(splits), digest.hexdigest(), ",".join(files.values()), files,
                   origins)


def _from_hub(data: DictConfig) -> RawData:
    loaded = datasets.load_dataset(data.dataset, data.subset)
    splits = {name: ds for name, ds in loaded.items() if name in SPLIT_KEYS}
    if "train" not in splits:
        raise ConfigError("data.dataset", data.dataset, f"a dataset with a train split; it has "
                                                        f"{list(loaded)}")
    digest = hashlib.sha256("".join(ds._fingerprint for ds in splits.values()).encode())
    source = data.dataset + (f"/{data.subset}" if data.subset else "")
    return RawData(datasets.DatasetDict(splits), digest.hexdigest(), source, {},
                   {split: (data.dataset, None) for split in splits})


def _generated(data: DictConfig, task: DictConfig, cache_dir: Path) -> RawData:
    """Write the generated rows under the configured column names, then read them like files."""
    kind = tasks.kind(task.kind)
    if task.name not in kind.generators:
        raise ConfigError("data.train_file", None, f"task={task.name} has no generated data (task "
                          f"kind {task.kind} generates {list(kind.generators)}); give "
                          "data.train_file or data.dataset")
    params = synthetic.params_for(task)
    columns = kind.column_map(data)
    spec = {"task": task.name, "params": params, "columns": columns,
            **{k: v for k, v in data.synthetic.items()}}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir / "synthetic" / f"{task.name}-{key}"
    sizes = {"train": data.synthetic.train_size, "validation": data.synthetic.eval_size,
             "test": data.synthetic.eval_size}
    if not all((folder / f"{s}.jsonl").is_file() for s in sizes):
        folder.mkdir(parents=True, exist_ok=True)
        for offset, (split, size) in enumerate(sizes.items()):
            rows = synthetic.generate(task.name, size, data.synthetic.seed * 1000 + offset, **params)
            tmp = folder / f"{split}.jsonl.tmp"
            with tmp.open("w") as out:
                for row in rows:
                    out.write(json.dumps({columns.get(k, k): v for k, v in row.items()}) + "\n")
            tmp.replace(folder / f"{split}.jsonl")
    files = {split: str(folder / f"{split}.jsonl") for split in sizes}
    digest = hashlib.sha256()
    splits = {}
    for split, file in files.items():
        digest.update(split.encode() + Path(file).read_bytes())
        splits[split] = datasets.load_dataset("json", data_files={split: file}, split=split)
    return RawData(datasets.DatasetDict(splits), digest.hexdigest(), f"generated:{task.name}", {},
                   {split: ("json", file) for split, file in files.items()})
