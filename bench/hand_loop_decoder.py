"""The plain PyTorch loop a user would write for intents on a decoder: SmolLM2-135M-Instruct with
transformers' sequence-classification head (the last real token's hidden state), which is what
`tunelab-train model=smollm2-135m task=intent` composes (task.head=classifier). The loop is
bench/hand_loop.py's (AdamW, weight decay 0.01, linear warm-up 6 % and decay, clip 1.0; LoRA r 8,
alpha 16, dropout 0.1) with the decoder's LoRA targets q_proj, v_proj; pad = eos, as users do.

    python bench/hand_loop_decoder.py --method lora --lr 2e-4 --steps 40 --batch 8 \
        --max-length 64 --padding longest --seed 1 --data '{"train": ..., "test": ..., ...}'
"""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)
import hand_loop
from _common import (
    DECODER_LORA_TARGETS,
    SMOLLM2_GGUF,
    encoded_data,
    lora_model,
    parse_args,
    seed_all,
    smollm2_folder,
)


def prepare():
    """Arguments, tokenizer, tokenized banking77 and the model, LoRA-wrapped when asked."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    args = parse_args()
    seed_all(args.seed)
    folder = smollm2_folder()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data, num_labels = encoded_data(args.files, tok, args.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(folder, gguf_file=SMOLLM2_GGUF,
                                                               num_labels=num_labels)
    model.config.pad_token_id = tok.pad_token_id
    if args.method == "lora":    # SEQ_CLS: peft also trains the new head (modules_to_save)
        model = lora_model(model, DECODER_LORA_TARGETS)
    return args, tok, data, model


if __name__ == "__main__":
    hand_loop.main(prepare)
