"""Methods that add no modules, only choose which existing parameters train (full, head, bitfit).
peft has no such selection (its BEFT adds new bias vectors instead), so it lives here."""

from __future__ import annotations

import torch

# Names transformers gives a task head (peft's own list for classification, plus QA and LM heads).
HEAD_NAMES = ("classifier", "score", "qa_outputs", "lm_head")


def head_parameters(net: torch.nn.Module) -> list[str]:
    """Parameter names of the task head, the layer every method must train. A language-model head
    tied to the input embeddings is reported under the embedding's name, so it is found by
    identity."""
    names = [name for name, _ in net.named_parameters() if name.split(".", 1)[0] in HEAD_NAMES]
    output = net.get_output_embeddings() if hasattr(net, "get_output_embeddings") else None
    if not names and output is not None:
        tied = {id(param) for param in output.parameters()}
        names = [name for name, param in net.named_parameters() if id(param) in tied]
    if not names:
        raise ValueError(f"{type(net).__name__} has no task head named one of {HEAD_NAMES}")
    return names


def is_head_parameter(name: str) -> bool:
    """A parameter of the task head, also inside a peft wrapper (`base_model.model.classifier.
    modules_to_save.default.weight`)."""
    return any(part in HEAD_NAMES for part in name.split("."))


def train_only(net: torch.nn.Module, chosen: set[str]) -> torch.nn.Module:
    """Freeze everything but the parameters named in `chosen`."""
    for name, param in net.named_parameters():
        param.requires_grad_(name in chosen)
    return net
