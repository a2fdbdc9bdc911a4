"""The one place a fine-tuning method is applied: peft configs for the PEFT family, parameter
selections for bitfit and head, the pre-load fit check, and trainable-parameter accounting.

Prefix tuning on transformers >= 5.24 goes through `compat.restore_past_key_values` until peft
reads the renamed cache argument (see that module for when to delete it).
"""

from __future__ import annotations

import re

import torch
from omegaconf import DictConfig
from peft import (IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig,
                  TaskType, get_peft_model)
from peft.utils import (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
                        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)

from tunelab.adapters.compat import restore_past_key_values
from tunelab.adapters.methods import BUILDERS, LORA_VARIANTS, check_oft_blocks, norm_modules
from tunelab.adapters.selection import bias_parameters, select
from tunelab.config import ConfigError

PEFT_METHODS = (*LORA_VARIANTS, "prefix", "prompt", "ia3", *BUILDERS)
SELECTIONS = ("bitfit", "head")
TARGETED = (*LORA_VARIANTS, "ia3", *BUILDERS)


def peft_task_type(task: DictConfig, family: str) -> TaskType | None:
    if task.kind == "classification" and task.head == "classifier":
        return TaskType.SEQ_CLS
    if task.kind == "qa" and family == "encoder":
        return TaskType.QUESTION_ANS
    if family == "decoder":
        return TaskType.CAUSAL_LM
    return None


def target_modules(adapter: DictConfig, model_cfg: DictConfig,
                   net: torch.nn.Module | None = None) -> list[str] | None:
    """The adapter's own list, else the model preset's; None lets peft pick its per-architecture
    default (a preset for a new architecture then needs no list). ln-tuning's default is the
    normalization layers of `net` (peft's own default where there is no net)."""
    if adapter.method == "ln-tuning":
        return list(adapter.target_modules or (norm_modules(net) if net is not None else [])) \
            or None
    preset = model_cfg.ia3_targets if adapter.method == "ia3" else model_cfg.lora_targets
    return list(adapter.target_modules or preset) or None


def feedforward_modules(adapter: DictConfig, model_cfg: DictConfig) -> list[str] | None:
    """IA3 scales the *input* of these (the feed-forward down projection) rather than the output."""
    return list(adapter.feedforward_modules or model_cfg.ia3_feedforward) or None


# transformers' name for the start/end head of every *ForQuestionAnswering model.
QA_HEAD = "qa_outputs"


def peft_config(adapter: DictConfig, model_cfg: DictConfig, task: DictConfig,
                net: torch.nn.Module | None = None) -> PeftConfig:
    task_type = peft_task_type(task, model_cfg.family)
    head = {}
    if task_type == TaskType.QUESTION_ANS and adapter.method in TARGETED:
        # peft's PeftModelForQuestionAnswering drops token_type_ids (and position_ids) on the
        # way to the base model for weight adapters, so a BERT-family model would train blind
        # to which tokens are the question. The generic PeftModel passes every input through;
        # the head it would have added to modules_to_save is named here instead.
        task_type, head = None, {"modules_to_save": [QA_HEAD]}
    if adapter.method in LORA_VARIANTS:
        return LoraConfig(task_type=task_type, r=adapter.r, lora_alpha=adapter.alpha,
                          lora_dropout=adapter.dropout, **LORA_VARIANTS[adapter.method],
                          target_modules=target_modules(adapter, model_cfg), **head)
    if adapter.method in BUILDERS:
        return BUILDERS[adapter.method](adapter, target_modules(adapter, model_cfg, net),
                                        task_type=task_type, **head)
    if adapter.method == "ia3":
        return IA3Config(task_type=task_type, target_modules=target_modules(adapter, model_cfg),
                         feedforward_modules=feedforward_modules(adapter, model_cfg), **head)
    if adapter.method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=adapter.num_virtual_tokens,
                                  prefix_projection=adapter.prefix_projection,
                                  encoder_hidden_size=adapter.encoder_hidden_size)
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=adapter.num_virtual_tokens)


def padding_side(adapter: DictConfig, model_cfg: DictConfig, task: DictConfig) -> str | None:
    """"left" where the adapter hides the padding from the model, else None (the tokenizer's own).

    Prompt tuning hands a decoder classifier embeddings instead of ids, so transformers cannot find
    each row's last real token and pools the last position, a pad on right-padded rows: a row's
    prediction then depends on what else is in its batch. Left padding puts the row's own last
    token there (peft's examples pad decoders left for the same reason). The run's saved tokenizer
    keeps the side, so evaluation and exports pad as training did."""
    classifier = peft_task_type(task, model_cfg.family) == TaskType.SEQ_CLS
    return "left" if adapter.method == "prompt" and model_cfg.family == "decoder" and classifier \
        else None


def needs_module_tree(adapter: DictConfig) -> bool:
    """Whether `check_fit` must see the model's modules (full and head fit every model)."""
    return adapter.method in (*TARGETED, "bitfit")


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list entry: the module name equals it or ends with `.<target>`."""
    return name == target or name.endswith(f".{target}")


def check_fit(skeleton: torch.nn.Module, adapter: DictConfig, model_cfg: DictConfig) -> None:
    """Reject, before any weights load, a method that cannot apply to this architecture. `skeleton`
    is the module tree without weights (`models.skeleton`), so this costs no download or memory."""
    names = [name for name, _ in skeleton.named_modules()]
    model_type = skeleton.config.model_type
    if adapter.method == "bitfit" and not bias_parameters(skeleton):
        raise ConfigError("adapter", adapter.name,
                          f"model={model_cfg.name} ({model_type}) has no bias terms, so bitfit would "
                          "train the head alone: use adapter=head for that, or adapter=ia3/lora")
    if adapter.method not in TARGETED:
        return
    targets = target_modules(adapter, model_cfg, skeleton)
    if adapter.method == "ln-tuning" and targets is None:
        raise ConfigError("adapter", adapter.name,
                          f"model={model_cfg.name} ({model_type}) has no normalization layers for "
                          "ln-tuning to train: name some in adapter.target_modules, or use "
                          "adapter=lora/ia3")
    defaults = (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING if adapter.method == "ia3"
                else TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
    if targets is None and model_type not in defaults:
        raise ConfigError("adapter.target_modules", None,
                          f"a list of module names: peft has no default for {model_type}; "
                          f"linear modules of model={model_cfg.name}: {_linear_leaves(skeleton)}")
    missing = [t for t in targets or [] if not any(_matches(n, t) for n in names)]
    if missing:
        kind, leaves = (("normalization layers", norm_modules(skeleton))
                        if adapter.method == "ln-tuning" else
                        ("linear modules", _linear_leaves(skeleton)))
        raise ConfigError("adapter.target_modules", missing,
                          f"module names that exist in model={model_cfg.name}; its {kind} "
                          f"are {leaves}")
    if adapter.method == "ia3":
        extra = sorted(set(feedforward_modules(adapter, model_cfg) or []) - set(targets or []))
        if extra:
            raise ConfigError("adapter.feedforward_modules", extra,
                              f"a subset of the IA3 target modules {targets}")
    if adapter.method == "oft":
        check_oft_blocks(adapter, {name: mod.in_features for name, mod in skeleton.named_modules()
                                   if isinstance(mod, torch.nn.Linear)
                                   and any(_matches(name, t) for t in targets or [])},
                         model_cfg.name)


def _linear_leaves(net: torch.nn.Module) -> list[str]:
    """Linear layer names below the repeated block index (`attention.self.query`): what a user types."""
    return sorted({re.split(r"\.\d+\.", name)[-1] for name, mod in net.named_modules()
                   if isinstance(mod, torch.nn.Linear)})


def apply_adapter(net: torch.nn.Module, adapter: DictConfig, model_cfg: DictConfig,
                  task: DictConfig) -> torch.nn.Module:
    """Return the model with exactly the method's parameters trainable."""
    if adapter.method == "full":
        net.requires_grad_(True)
        return net
    if adapter.method in SELECTIONS:
        return select(net, adapter.method)
    if adapter.method in PEFT_METHODS:
        config = peft_config(adapter, model_cfg, task, net)
        return restore_past_key_values(get_peft_model(net, config))
    raise NotImplementedError(f"adapter method {adapter.method}")


def parameter_counts(net: torch.nn.Module) -> dict[str, float]:
    """params/trainable, params/total and params/trainable_pct, counted once per shared tensor."""
    seen, trainable, total = set(), 0, 0
    for param in net.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return {"params/trainable": trainable, "params/total": total,
            "params/trainable_pct": 100.0 * trainable / max(total, 1)}
