"""`tunelab-train` clipping through Lightning's own path (LightningModule's default
`configure_gradient_clipping`), as every fp32 run did before TuneModule clipped itself:

    python bench/_train_lightning_clip.py [OVERRIDES...]
"""

from __future__ import annotations

import sys

import lightning as L

from tunelab.models import TuneModule

TuneModule.configure_gradient_clipping = L.LightningModule.configure_gradient_clipping
sys.argv = ["tunelab-train", *sys.argv[1:]]

from tunelab.train import main  # noqa: E402

main()
