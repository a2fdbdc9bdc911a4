"""Where text comes from and how each task turns it into batches."""

from tunelab import tasks
from tunelab.data.datamodule import TuneDataModule
from tunelab.data.sources import RawData, load_splits


def task_data_for(raw: RawData, data, task, family: str):
    """Check the raw splits against the task and return its tokenization/collation helper: the
    data class the task registry names for this task's head on `family`."""
    return tasks.load(tasks.spec_for(task, family).data)(raw, data, task)


__all__ = ["RawData", "TuneDataModule", "load_splits", "task_data_for"]
