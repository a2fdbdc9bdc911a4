"""A local GGUF's config is parsed once a process: the LoRA fit pre-check (models.skeleton) and the
weight load share it (issue #19 item 3), and a changed file is parsed anew."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CONF, ROOT

# Writes tiny one-layer Llama GGUFs with the `gguf` package (float32 tensors, so transformers'
# legacy GGUF path reads them as it reads SmolLM2's), and counts the opens of each file, which
# every GGUF read starts with (numpy memory-maps it), through an audit hook.
PROBE = """
import json, sys
from pathlib import Path

import numpy as np
import gguf

opens = {{}}
def on_open(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".gguf"):
        opens[args[0]] = opens.get(args[0], 0) + 1
sys.addaudithook(on_open)

def write(folder, layers):
    folder.mkdir(parents=True, exist_ok=True)
    hidden, ff, vocab = 16, 32, 32
    w = gguf.GGUFWriter(str(folder / "tiny.gguf"), "llama")
    w.add_context_length(64); w.add_embedding_length(hidden); w.add_block_count(layers)
    w.add_feed_forward_length(ff); w.add_rope_dimension_count(hidden // 2)
    w.add_head_count(2); w.add_head_count_kv(2); w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    rng = np.random.default_rng(0)
    t = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    w.add_tensor("token_embd.weight", t(vocab, hidden))
    for i in range(layers):
        for name, shape in (("attn_norm", (hidden,)), ("attn_q", (hidden, hidden)),
                            ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_norm", (hidden,)),
                            ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)),
                            ("ffn_down", (hidden, ff))):
            w.add_tensor(f"blk.{{i}}.{{name}}.weight", t(*shape))
    w.add_tensor("output_norm.weight", t(hidden)); w.add_tensor("output.weight", t(vocab, hidden))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return str(folder / "tiny.gguf")

from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM
from tunelab import models

def cfg_for(folder):
    with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
        return compose("train", overrides=["model=tiny-llama", "task=instruct",
                                           f"model.pretrained={{folder}}",
                                           "model.gguf_file=tiny.gguf", "model.config=null"])

tmp = Path({tmp!r})
alone, both = write(tmp / "alone", 1), write(tmp / "both", 1)
opens.clear()
cfg = cfg_for(tmp / "alone")
tokenizer = models.load_tokenizer(cfg.model)
models.load_model(cfg.model, cfg.task, None, tokenizer)

cfg = cfg_for(tmp / "both")
models.skeleton(cfg.model, cfg.task)
after_skeleton = opens[both]
net = models.load_model(cfg.model, cfg.task, None, tokenizer)
skeleton_then_load = opens[both]
plain = AutoModelForCausalLM.from_pretrained(str(tmp / "both"), gguf_file="tiny.gguf")
same = sorted(net.state_dict()) == sorted(plain.state_dict()) and all(
    np.array_equal(v.numpy(), plain.state_dict()[k].numpy()) for k, v in net.state_dict().items())

write(tmp / "both", 2)
layers = models.skeleton(cfg.model, cfg.task).config.num_hidden_layers
print(json.dumps({{"alone": opens[alone], "after_skeleton": after_skeleton,
                  "skeleton_then_load": skeleton_then_load,
                  "same_weights": same, "layers_after_rewrite": layers}}))
"""


def test_the_fit_pre_check_and_the_weight_load_parse_a_gguf_config_once(tmp_path):
    """skeleton() then load_model() opens the GGUF as often as load_model() alone does: the
    pre-check's config parse is the weight load's (SmolLM2: ~3 s CPU saved per LoRA run). The
    weights equal transformers' own load of the file; a rewritten file is parsed anew."""
    code = PROBE.format(conf=str(CONF), tmp=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after_skeleton"] >= 1
    assert result["skeleton_then_load"] == result["alone"], result
    assert result["same_weights"]
    assert result["layers_after_rewrite"] == 2
