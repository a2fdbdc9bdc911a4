"""The one place a fine-tuning method is applied: peft configs for the PEFT family, parameter
selections for bitfit and head, save/reload/merge, and trainable-parameter accounting."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from tunelab.config import ConfigError

PEFT_METHODS = ("lora", "dora", "prefix", "prompt", "ia3")


def peft_task_type(task: DictConfig, family: str) -> TaskType | None:
    if task.kind == "classification" and task.head == "classifier":
        return TaskType.SEQ_CLS
    if task.kind == "qa" and family == "encoder":
        return TaskType.QUESTION_ANS
    if family == "decoder":
        return TaskType.CAUSAL_LM
    return None


def peft_config(adapter: DictConfig, model_cfg: DictConfig, task: DictConfig):
    task_type = peft_task_type(task, model_cfg.family)
    if adapter.method in ("lora", "dora"):
        return LoraConfig(task_type=task_type, r=adapter.r, lora_alpha=adapter.alpha,
                          lora_dropout=adapter.dropout, use_dora=adapter.method == "dora",
                          target_modules=list(target_modules(adapter, model_cfg)))
    raise NotImplementedError(f"adapter method {adapter.method}")


def target_modules(adapter: DictConfig, model_cfg: DictConfig) -> list[str]:
    return list(adapter.target_modules or model_cfg.lora_targets)


def check_targets(net: torch.nn.Module, adapter: DictConfig, model_cfg: DictConfig) -> None:
    """Fail with the modules that do exist when a target matches none of the model's modules."""
    if adapter.method not in ("lora", "dora", "ia3"):
        return
    leaves = {name.rsplit(".", 1)[-1] for name, mod in net.named_modules()
              if isinstance(mod, torch.nn.Linear)}
    missing = [t for t in target_modules(adapter, model_cfg) if t not in leaves]
    if missing:
        raise ConfigError("adapter.target_modules", missing,
                          f"linear modules of model={model_cfg.name}: {sorted(leaves)}")


def apply_adapter(net: torch.nn.Module, adapter: DictConfig, model_cfg: DictConfig,
                  task: DictConfig) -> torch.nn.Module:
    """Return the model with exactly the method's parameters trainable."""
    if adapter.method == "full":
        net.requires_grad_(True)
        return net
    if adapter.method in PEFT_METHODS:
        check_targets(net, adapter, model_cfg)
        return get_peft_model(net, peft_config(adapter, model_cfg, task))
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


def save_weights(net: torch.nn.Module, folder: Path, tokenizer=None) -> float:
    """Save the trained weights (adapter-only for peft, the whole model for full fine-tuning) in a
    form `from_pretrained` / `PeftModel.from_pretrained` loads; return their size in MB."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(folder, safe_serialization=True)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return size / 2**20


def load_weights(base: torch.nn.Module, folder: Path) -> torch.nn.Module:
    """The inverse of `save_weights` for peft methods: the trained adapter on a freshly loaded base."""
    return PeftModel.from_pretrained(base, str(folder))


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()
