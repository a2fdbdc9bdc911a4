"""One dataclass per config group, and `check_config`, which binds the composed config to them.

Binding catches misspelt keys and wrong types; `_check_values` catches out-of-range values and
combinations that cannot work. Both run before any data or weights load, and every message names
the key, the value given and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from tunelab import tasks
from tunelab.config.errors import ConfigError

FAMILIES = ("encoder", "decoder", "rnn")
TASK_KINDS = tasks.kinds()
# The heads each model family answers each task kind with (tunelab.tasks); a family missing from
# a kind cannot serve it. The first head is the family's native one, which `task.head: null`
# resolves to.
TASK_HEADS = {kind: tasks.heads(kind) for kind in TASK_KINDS}
TASK_FAMILIES = {kind: tuple(heads) for kind, heads in TASK_HEADS.items()}
# A preset of each family, named in messages as what would work instead.
FAMILY_EXAMPLES = {"encoder": "minilm", "decoder": "smollm2-135m", "rnn": "lstm"}


@dataclass
class ModelConfig:
    name: str
    family: str
    pretrained: str | None = None
    revision: str | None = None
    gguf_file: str | None = None
    tokenizer: str | None = None
    config: dict[str, Any] | None = None
    init_from: str | None = None
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    max_positions: int = 512
    lora_targets: list[str] = field(default_factory=list)
    # IA3 defaults for this architecture: scaled modules, and which of them are feed-forward.
    ia3_targets: list[str] = field(default_factory=list)
    ia3_feedforward: list[str] = field(default_factory=list)
    chat_template: str | None = None
    # a fresh task head's rate on this body (optim.head_lr's default): it depends on the scale of
    # the features the head reads; null: the head trains at optim.lr
    head_lr: float | None = None


@dataclass
class TaskConfig:
    name: str
    kind: str
    head: str | None = None     # null: the model family's native head for this kind (TASK_HEADS)
    metrics: list[str] = field(default_factory=list)   # empty: every metric of the head
    monitor: str = "loss"
    mode: str = "min"
    num_classes: int | None = None
    doc_stride: int = 64
    max_new_tokens: int = 32
    generate_eval_samples: int = 32


@dataclass
class HardwareConfig:
    name: str
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    process_group_backend: str | None = None
    usd_per_hour: float | None = None     # price of one node; cost/usd = price x nodes x fit hours


@dataclass
class TrainerConfig:
    name: str
    max_epochs: int | None = 3
    max_steps: int = -1
    val_check_interval: int | None = None
    checkpoint_every_n_steps: int = 50
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class SyntheticConfig:
    train_size: int = 2000
    eval_size: int = 400
    seed: int = 0


@dataclass
class DataConfig:
    name: str
    dataset: str | None = None
    subset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    validation_fraction: float = 0.1
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    question_column: str = "question"
    context_column: str = "context"
    answer_column: str = "answer"
    prompt_column: str = "prompt"
    response_column: str = "response"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 128
    batch_size: int = 32
    num_workers: int = 0
    padding: str = "longest"
    group_by_length: bool = False
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class OptimConfig:
    name: str
    lr: float
    head_lr: float | None = None    # the task head's own rate; None: lr
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ObjectiveConfig:
    name: str
    aux_weight: float = 0.0
    mlm_probability: float = 0.15


@dataclass
class TrackingConfig:
    name: str
    uri: str | None = None
    experiment: str = "tunelab"
    run_name: str | None = None
    on_finished: str = "skip"
    system_metrics: bool = False


@dataclass
class BudgetConfig:
    """Limits beside trainer.max_steps; the first reached ends the run. null = no limit."""
    name: str = "default"
    tokens: int | None = None
    seconds: float | None = None
    flops: float | None = None


@dataclass
class StudyConfig:
    """Set by hydra/sweeper=study on each of its runs (tags tunelab.study_id/arm/phase); part of
    the config hash, so two studies never share a run."""
    id: str
    arm: str
    phase: str


@dataclass
class PathsConfig:
    name: str
    cache_dir: str = ".cache/tunelab"
    checkpoint_dir: str = "checkpoints"
    mlruns_dir: str = "mlruns"


GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "task": TaskConfig,
    "hardware": HardwareConfig,
    "trainer": TrainerConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "objective": ObjectiveConfig,
    "tracking": TrackingConfig,
    "paths": PathsConfig,
}
# Optional groups: a config without them (an older run's, reproduced) binds to their defaults.
OPTIONAL_SCHEMAS: dict[str, type] = {"budget": BudgetConfig, "study": StudyConfig}
ROOT_KEYS = {"seed", "adapter", *GROUP_SCHEMAS}
# `search:` beside a method, optimizer or model declares its space for hydra/sweeper=study;
# runs never read it
SEARCH_KEY = "search"


def check_config(cfg: DictConfig) -> DictConfig:
    """Raise ConfigError for the first key that is unknown, mistyped, out of range or incompatible;
    return the resolved config with every schema default filled in (what the run records)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    allowed = sorted(ROOT_KEYS | set(OPTIONAL_SCHEMAS))
    for key in plain:
        if key not in allowed:
            raise ConfigError(key, plain[key], f"unknown top-level key; allowed: {allowed}")
        if isinstance(plain[key], dict):
            plain[key].pop(SEARCH_KEY, None)
    for key in sorted(ROOT_KEYS - set(plain)):
        raise ConfigError(key, None, "missing; every run needs this group")
    if not isinstance(plain["seed"], int) or isinstance(plain["seed"], bool):
        raise ConfigError("seed", plain["seed"], "an integer")
    checked = {"seed": plain["seed"]}
    for group in ("model", "task", "adapter", "hardware", "trainer", "data", "optim", "objective",
                  "tracking", "paths"):
        schema = GROUP_SCHEMAS.get(group)
        if group == "adapter":
            method = plain["adapter"].get("method") if isinstance(plain["adapter"], dict) else None
            methods = _adapter_registry().METHODS
            if method not in methods:
                raise ConfigError("adapter.method", method, f"one of {list(methods)}")
            schema = methods[method]     # the method's settings dataclass
        checked[group] = _bind(group, plain[group], schema)
    checked["budget"] = _bind("budget", plain.get("budget", {}), BudgetConfig)
    if "study" in plain:
        checked["study"] = _bind("study", plain["study"], StudyConfig)
    _resolve_head(checked["task"], checked["model"]["family"])
    validated = OmegaConf.create(checked)
    _check_values(validated)
    if not rates_its_head(validated):       # recorded as what the run does: no head rate
        validated.optim.head_lr = None
    return validated


def rates_its_head(cfg: DictConfig) -> bool:
    """Whether `optim.head_lr` applies: a fresh task head (a classifier or span head) trains beside
    a pretrained body that trains too. adapter=head trains the head alone, at optim.lr; a decoder
    writing its answer trains its own pretrained LM head, part of the body; an rnn model trains
    from scratch, its body as fresh as its head."""
    spec = tasks.spec_for(cfg.task, cfg.model.family)
    return spec.new_head and cfg.adapter.method != "head" and cfg.model.family != "rnn"


def _adapter_registry() -> ModuleType:
    """adapters/methods: each method's settings are its schema. Imported on use because adapters/
    imports config.errors, so a module-level import would close a cycle."""
    from tunelab.adapters import methods
    return methods


def _resolve_head(task: dict, family: str) -> None:
    """`task.head: null` -> the family's native head, so the recorded config names the head used.
    A family that cannot serve the task keeps null, and `_check_combination` says why."""
    if task["head"] is None:
        task["head"] = tasks.native_head(task["kind"], family)


def _bind(group: str, node: Any, schema: type) -> dict:
    if not isinstance(node, dict):
        raise ConfigError(group, node, f"a mapping with keys {[f.name for f in fields(schema)]}")
    allowed = [f.name for f in fields(schema)]
    for key in node:
        if key not in allowed:
            raise ConfigError(f"{group}.{key}", node[key], f"unknown key; {group} allows {allowed}")
    try:
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), node))
    except (ConfigKeyError, ValidationError) as err:
        key = f"{group}.{err.full_key}" if err.full_key else group
        wanted = _type_name(schema, str(err.full_key).split(".")[0])
        raise ConfigError(key, _lookup(node, str(err.full_key)), f"expected {wanted}") from None


def _type_name(schema: type, name: str) -> str:
    for f in fields(schema):
        if f.name == name:
            return str(f.type)
    return "a known key"


def _lookup(node: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return node
        node = node[part]
    return node


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _check_values(cfg: DictConfig) -> None:
    model, task, adapter, data, trainer, hw = (
        cfg.model, cfg.task, cfg.adapter, cfg.data, cfg.trainer, cfg.hardware)
    _require(model.family in FAMILIES, "model.family", model.family, f"one of {list(FAMILIES)}")
    _require(model.pretrained is not None or model.config is not None, "model.pretrained",
             model.pretrained, "a Hub id, local folder or pkg:// path (or model.config for random init)")
    _require(task.kind in TASK_KINDS, "task.kind", task.kind, f"one of {list(TASK_KINDS)}")
    _require(task.mode in ("min", "max"), "task.mode", task.mode, "min or max")
    _adapter_registry().method_of(adapter).check_values(model)
    _require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "a learning rate > 0")
    # the preset's rate first: optim.head_lr takes it by default, and the error names the key set
    _require(model.head_lr is None or model.head_lr > 0, "model.head_lr", model.head_lr,
             "null (no default head rate on this model) or a learning rate > 0")
    head_lr = cfg.optim.get("head_lr")
    _require(head_lr is None or head_lr > 0, "optim.head_lr", head_lr,
             "null (the head trains at optim.lr) or a learning rate > 0")
    _require(cfg.optim.weight_decay >= 0, "optim.weight_decay", cfg.optim.weight_decay, ">= 0")
    _require(0 <= cfg.optim.warmup_ratio < 1, "optim.warmup_ratio", cfg.optim.warmup_ratio, "in [0, 1)")
    _require(cfg.objective.aux_weight >= 0, "objective.aux_weight", cfg.objective.aux_weight, ">= 0")
    _require(0 < cfg.objective.mlm_probability < 1, "objective.mlm_probability",
             cfg.objective.mlm_probability, "in (0, 1)")
    _require(data.batch_size > 0, "data.batch_size", data.batch_size, "an integer > 0")
    _require(data.max_length > 0, "data.max_length", data.max_length, "an integer > 0")
    _require(data.max_length <= model.max_positions, "data.max_length", data.max_length,
             f"at most {model.max_positions}, the position limit of model={model.name}")
    _require(0 < data.validation_fraction < 1, "data.validation_fraction", data.validation_fraction,
             "in (0, 1)")
    for key in ("max_train_samples", "max_eval_samples"):
        value = data[key]
        _require(value is None or value > 0, f"data.{key}", value, "null or an integer > 0")
    _require(data.num_workers >= 0, "data.num_workers", data.num_workers, ">= 0")
    _require(data.padding in ("longest", "max_length"), "data.padding", data.padding,
             "one of ['longest', 'max_length'] (pad each batch to its longest row, or "
             "every row to data.max_length)")
    _require(trainer.max_steps == -1 or trainer.max_steps > 0, "trainer.max_steps",
             trainer.max_steps, "-1 (no limit) or an integer > 0")
    _require(trainer.max_epochs is None or trainer.max_epochs > 0, "trainer.max_epochs",
             trainer.max_epochs, "null or an integer > 0")
    _require(trainer.max_steps > 0 or trainer.max_epochs is not None, "trainer.max_steps",
             trainer.max_steps, "> 0 when trainer.max_epochs is null")
    _require(trainer.val_check_interval is None or trainer.val_check_interval > 0,
             "trainer.val_check_interval", trainer.val_check_interval, "null or an integer > 0")
    _require(trainer.checkpoint_every_n_steps > 0, "trainer.checkpoint_every_n_steps",
             trainer.checkpoint_every_n_steps, "an integer > 0")
    _require(trainer.accumulate_grad_batches > 0, "trainer.accumulate_grad_batches",
             trainer.accumulate_grad_batches, "an integer > 0")
    _require(hw.num_nodes > 0, "hardware.num_nodes", hw.num_nodes, "an integer > 0")
    _require(hw.usd_per_hour is None or hw.usd_per_hour >= 0, "hardware.usd_per_hour",
             hw.usd_per_hour, "null (no cost/usd) or a price per node-hour >= 0")
    _require(hw.devices == "auto" or (isinstance(hw.devices, int) and hw.devices > 0),
             "hardware.devices", hw.devices, "an integer > 0 or 'auto'")
    if isinstance(hw.devices, int):
        world = hw.devices * hw.num_nodes * trainer.accumulate_grad_batches
        _require(data.batch_size % world == 0, "data.batch_size", data.batch_size,
                 f"a multiple of devices x nodes x accumulate_grad_batches = {world} "
                 "(it is the global batch)")
    _require(not data.group_by_length or (hw.devices == 1 and hw.num_nodes == 1),
             "data.group_by_length", data.group_by_length,
             f"false with hardware={hw.name} (devices={hw.devices}, num_nodes={hw.num_nodes}): "
             "length grouping runs on one device (hardware=cpu or gpu)")
    for key in ("tokens", "seconds", "flops"):
        value = cfg.budget[key]
        _require(value is None or value > 0, f"budget.{key}", value, "null (no limit) or > 0")
    if "study" in cfg:
        _require(cfg.study.phase in ("search", "confirm"), "study.phase", cfg.study.phase,
                 "search or confirm")
    _require(cfg.tracking.on_finished in ("skip", "rerun"), "tracking.on_finished",
             cfg.tracking.on_finished, "skip or rerun")
    _check_combination(cfg)


def _check_combination(cfg: DictConfig) -> None:
    model, task, adapter = cfg.model, cfg.task, cfg.adapter
    families = TASK_FAMILIES[task.kind]
    _require(model.family in families, "task", task.name,
             f"task kind {task.kind} needs a model family in {list(families)} (e.g. "
             f"{', '.join('model=' + FAMILY_EXAMPLES[f] for f in families)}); "
             f"model={model.name} is {model.family}")
    heads = TASK_HEADS[task.kind][model.family]
    others = [f"model={FAMILY_EXAMPLES[f]} ({f})" for f, offered in TASK_HEADS[task.kind].items()
              if task.head in offered and f != model.family]
    _require(task.head in heads, "task.head", task.head,
             f"one of {list(heads)} (null: {heads[0]}, the native one) for task kind {task.kind} on "
             f"model={model.name} ({model.family})"
             + (f"; {task.head} needs {' or '.join(others)}" if others else ""))
    spec = tasks.spec_for(task, model.family)
    _check_metrics(task, spec)
    if spec.windows:
        _require(0 < task.doc_stride < cfg.data.max_length // 2, "task.doc_stride",
                 task.doc_stride, f"an integer in [1, {cfg.data.max_length // 2}): the tokens two "
                 f"windows of data.max_length={cfg.data.max_length} share")
    if task.monitor in spec.generated_metrics():
        _require(task.generate_eval_samples > 0, "task.generate_eval_samples",
                 task.generate_eval_samples, f"an integer > 0: task kind {task.kind} with "
                 f"head={task.head} scores {task.monitor} (the monitor) on that many greedy "
                 "answers")
    _require(cfg.objective.aux_weight == 0 or (not spec.self_supervised and model.family != "rnn"),
             "objective.aux_weight", cfg.objective.aux_weight,
             f"0 here: task={task.name} already trains the self-supervised objective, and rnn "
             "models have none; the auxiliary loss applies to encoder and decoder task runs")
    _require(task.max_new_tokens > 0, "task.max_new_tokens", task.max_new_tokens, "an integer > 0")
    _require(task.generate_eval_samples >= 0, "task.generate_eval_samples",
             task.generate_eval_samples, "an integer >= 0 (0: no em)")
    _require(model.family != "rnn" or adapter.method == "full", "adapter", adapter.name,
             f"model={model.name} is trained from scratch; only adapter=full applies to it")
    _require(model.family != "rnn" or not model.gradient_checkpointing,
             "model.gradient_checkpointing", True, f"false for model={model.name} (an LSTM)")


def _check_metrics(task: DictConfig, spec: tasks.TaskSpec) -> None:
    """`task.metrics` names metrics the head computes (empty: all of them, filled in so the run
    records what it reports); `task.monitor` is one of them or `loss`."""
    where = f"task kind {task.kind} with head={task.head} computes {list(spec.metrics)}"
    unknown = [name for name in task.metrics if name not in spec.metrics]
    _require(not unknown, "task.metrics", list(task.metrics),
             f"a list of metrics {where} (empty: all of them); unknown: {unknown}")
    if not task.metrics:
        task.metrics = list(spec.metrics)
    _require(task.monitor in ("loss", *task.metrics), "task.monitor", task.monitor,
             f"loss or one of task.metrics {list(task.metrics)} ({where})")
