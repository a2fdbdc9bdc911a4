"""Secret masking for everything tunelab writes into MLflow: run names, tags, params, dataset
sources, error texts. Light (no torch), so every writer of every run kind masks the same way.

A name is a secret's when its last word is one (HF_TOKEN, WANDB_API_KEY, hub.token), not when a
secret word sits inside it (model.config.num_key_value_heads, token_type_ids). A value is masked
when it is the value of an environment variable named like a secret, when it has a known token
format, or when it follows a secret name (`hub.token=...`, `?token=...`, `user:password@`).
"""

from __future__ import annotations

import re
from typing import Any

from tunelab.startup import environment

MASK = "***"
_SECRET_NAME = re.compile(r"(^|[._-])(token|secret|password|passwd|api[_-]?key|access[_-]?key|"
                          r"private[_-]?key|key|auth|credentials?)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{20,}|"
                           r"AKIA[0-9A-Z]{16})\b")
_PAIR = re.compile(r"([\w.\-]+)(\s*[=:]\s*)(\S+)")
_QUERY_PAIR = re.compile(r"(?<=[?&;])([\w.\-]+)=([^&;#\s]+)")   # a URL's ?name=value&...
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)([^/\s@]+)@")        # scheme://user:password@host


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def secret_env_values() -> list[str]:
    """Values of environment variables named like secrets (HF_TOKEN, WANDB_API_KEY, ...), longest
    first: masked wherever they appear, since paths and exception messages can carry them."""
    values = {v for k, v in environment().items() if is_secret_name(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def mask_values(text: str) -> str:
    """Mask secret values wherever they sit: known token formats, secret environment values, a
    URL's password and its secret-named query parameters. Leaves `name: value` prose alone, so a
    config string (a chat template) keeps its meaning."""
    for value in secret_env_values():
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", _SECRET_VALUE.sub(MASK, text))
    return _QUERY_PAIR.sub(lambda m: f"{m[1]}={MASK}" if is_secret_name(m[1]) else m[0], text)


def _mask_pair(match: re.Match) -> str:
    return f"{match[1]}{match[2]}{MASK}" if is_secret_name(match[1]) else match[0]


def mask_text(text: str) -> str:
    """Free text (overrides, errors, names): `mask_values`, and the value of every `name=value`
    or `name: value` pair whose name looks like a secret's."""
    return _PAIR.sub(_mask_pair, mask_values(text))


def masked(value: Any, name: str = "") -> Any:
    """A copy of a plain config tree with secret-named keys and secret-looking values masked."""
    if name and is_secret_name(name.rsplit(".", 1)[-1]) and value is not None:
        return MASK
    if isinstance(value, dict):
        return {k: masked(v, f"{name}.{k}" if name else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, name) for v in value]
    if isinstance(value, str):
        return mask_values(value)
    return value
