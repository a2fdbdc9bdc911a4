"""`tunelab-train` with torch's default (unfused) AdamW, for an A/B of the fused optimizer:

    python bench/_train_unfused.py [OVERRIDES...]
"""

from __future__ import annotations

import sys

import torch

AdamW = torch.optim.AdamW


class UnfusedAdamW(AdamW):
    def __init__(self, *args, fused=None, **kwargs):
        super().__init__(*args, **kwargs)


torch.optim.AdamW = UnfusedAdamW
sys.argv = ["tunelab-train", *sys.argv[1:]]

from tunelab.train import main

main()
