"""`tunelab-train` with bench/gpu/probes.StepTimer added to its Trainer, for bench/gpu/check.py:

    GPU_CHECK_TIMING=timing.json python bench/gpu/timed_train.py [OVERRIDES...]
"""

from __future__ import annotations

import sys

import lightning as L

from probes import StepTimer

_init = L.Trainer.__init__


def _timed_init(self, *args, callbacks=None, **kwargs):
    _init(self, *args, callbacks=[*(callbacks or []), StepTimer()], **kwargs)


L.Trainer.__init__ = _timed_init
sys.argv = ["tunelab-train", *sys.argv[1:]]

from tunelab.train import main  # noqa: E402

main()
