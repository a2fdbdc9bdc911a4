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


# A full fine-tune through train() on tiny-bert, with every store in `tmp`; reports the tunelab
# and Lightning source files on the stack when peft is first imported (none when it never is).
FULL_RUN = """
import json, sys, traceback

first_peft = []
def on_import(event, args):
    if event == "import" and args[0] == "peft" and not first_peft:
        first_peft.append([f.filename for f in traceback.extract_stack()
                           if "/tunelab/" in f.filename or "/lightning/" in f.filename])
sys.addaudithook(on_import)

from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from tunelab.train import train

with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose("train", overrides={overrides!r})
with open_dict(cfg):
    cfg.tracking.uri = "sqlite:///{tmp}/mlruns/mlflow.db"
    cfg.paths.cache_dir, cfg.paths.checkpoint_dir = "{tmp}/cache", "{tmp}/checkpoints"
    cfg.paths.mlruns_dir = "{tmp}/mlruns"
metric = train(cfg)
print(json.dumps({{"metric": metric, "peft_first_imported_from": first_peft}}))
"""


def test_a_full_run_through_train_imports_peft_only_to_save_its_weights(tmp_path):
    """A full fine-tune needs peft for nothing until it saves its weights (adapters.storage, after
    training): not for the model, the optimizer or its warm-up schedule (transformers'
    get_linear_schedule_with_warmup would import it, 0.2 s before the first step), nor during
    Lightning's fit."""
    (tmp_path / "mlruns").mkdir()
    overrides = ["model=tiny-bert", "adapter=full", "hardware.precision=32-true",
                 "trainer.max_steps=3", "trainer.max_epochs=null",
                 "trainer.enable_progress_bar=false", "data.synthetic.train_size=64",
                 "data.synthetic.eval_size=16", "data.batch_size=16", "data.max_length=16"]
    code = FULL_RUN.format(conf=str(CONF), overrides=overrides, tmp=tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["metric"] is not None
    [stack] = result["peft_first_imported_from"]
    assert stack[-1].endswith("tunelab/adapters/storage.py"), stack
    assert not [f for f in stack if "/lightning/" in f or "/tunelab/models/" in f], stack
