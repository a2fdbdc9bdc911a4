"""What a run imports before its first step: only what its method uses (issue #19 item 3)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CONF, ROOT

# Checks and applies `method` as a run does (config check, the fit check on the module tree when
# the method has one, apply), on a small BERT built from its config, and reports the trainable
# parameter count and which peft / peft-method modules the process has loaded.
PROBE = """
import json, sys
import transformers
from hydra import compose, initialize_config_dir
from tunelab import adapters
from tunelab.config import check_config

trained = {{}}
for method in {methods!r}:
    with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
        cfg = check_config(compose("train", overrides=["model=tiny-bert", f"adapter={{method}}"]))
    net = transformers.AutoModelForSequenceClassification.from_config(transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2))
    if adapters.needs_module_tree(cfg.adapter):
        adapters.check_fit(net, cfg.adapter, cfg.model)
    net = adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)
    trained[method] = sum(p.numel() for p in net.parameters() if p.requires_grad)
loaded = sorted(m for m in sys.modules if m == "peft" or m.startswith("tunelab.adapters.methods."))
print(json.dumps({{"trained": trained, "loaded": loaded}}))
"""


def _probe(methods: list[str]) -> dict:
    code = PROBE.format(methods=methods, conf=str(CONF))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_full_head_and_bitfit_check_and_apply_without_importing_peft():
    """A method peft does not implement loads only its own module: checking and applying full,
    head and bitfit imports neither peft (0.3 s) nor any peft method's module. LoRA, checked the
    same way, loads peft and its own module (and its variants' base), so the probe sees imports."""
    selections = _probe(["full", "head", "bitfit"])
    assert selections["loaded"] == ["tunelab.adapters.methods.bitfit",
                                    "tunelab.adapters.methods.full",
                                    "tunelab.adapters.methods.head"]
    assert 0 < selections["trained"]["head"] < selections["trained"]["bitfit"] < \
        selections["trained"]["full"]

    lora = _probe(["lora"])
    assert "peft" in lora["loaded"] and "tunelab.adapters.methods.lora" in lora["loaded"]
    assert not {"tunelab.adapters.methods.full", "tunelab.adapters.methods.vera"} & \
        set(lora["loaded"])
    assert 0 < lora["trained"]["lora"] < selections["trained"]["full"]
