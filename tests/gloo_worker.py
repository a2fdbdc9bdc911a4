"""One rank of tests/test_distributed.py's two-process gloo job, started by torchrun (so Lightning
finds the ranks already there, as under Slurm): the resume decision while a stale checkpoint is on
disk, each rank's dropout stream, and how many eval rows the metrics count. Writes
`rank<N>.json` into the folder given as its argument."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import TINY, compose_cfg, prepared_data  # noqa: E402
from tunelab import adapters, hardware, models  # noqa: E402
from tunelab.tracking.checkpoints import StepSeed, resume_point  # noqa: E402

EVAL_ROWS = 33          # does not divide by 2 ranks x 4 rows a batch


class Probe(L.Callback):
    """After StepSeed: the first numbers each rank's dropout would draw; at the end of validation:
    the rows the loss metric counted, summed over ranks."""

    def __init__(self):
        self.draws: list[list[float]] = []
        self.eval_rows = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.draws.append(torch.rand(4).tolist())
        torch.manual_seed(torch.initial_seed())      # leave the stream as StepSeed set it

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        rows = pl_module.val_loss.weight.detach().clone()
        torch.distributed.all_reduce(rows)
        self.eval_rows = int(rows)


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    cfg = compose_cfg([*TINY, "hardware=cpu-ddp", "adapter=lora", "trainer.max_steps=2",
                       "data.synthetic.train_size=32", f"data.synthetic.eval_size={EVAL_ROWS}",
                       "data.batch_size=8"], out / f"rank{rank}")
    cfg, raw, task_data, tokenizer, dm = prepared_data(cfg, batch_size=4)
    net = adapters.apply_adapter(
        models.load_model(cfg.model, cfg.task, task_data.label_names, tokenizer, cfg.seed),
        cfg.adapter, cfg.model, cfg.task)
    module = models.TuneModule(net, cfg.task, cfg.optim, cfg.objective,
                               num_labels=len(task_data.label_names), tokenizer=tokenizer)
    probe = Probe()
    trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer, cfg, out),
                        logger=False, enable_checkpointing=False,
                        callbacks=[StepSeed(cfg.seed), probe])
    folder = out / "checkpoints"
    if rank == 0:
        time.sleep(3)             # rank 1 decides first, while the stale checkpoint is there
    new_run = resume_point(trainer, folder, resumed=False)
    stale_gone = not (folder / "last.ckpt").exists()
    trainer.strategy.barrier()
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "last.ckpt").write_bytes(b"resume me")
    trainer.strategy.barrier()
    resumed = resume_point(trainer, folder, resumed=True)
    trainer.fit(module, dm)
    trainer.validate(module, dm, verbose=False)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "new_run": None if new_run is None else str(new_run), "stale_gone": stale_gone,
        "resumed": None if resumed is None else str(resumed), "draws": probe.draws,
        "eval_rows": probe.eval_rows, "world": trainer.world_size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
