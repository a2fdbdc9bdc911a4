"""Where text comes from and how each task turns it into batches."""

from tunelab.data.classification import ClassificationData
from tunelab.data.datamodule import TuneDataModule
from tunelab.data.generative import (GenerateClassificationData, GenerateQaData, InstructData,
                                     LanguageModelingData)
from tunelab.data.qa import QaData
from tunelab.data.sources import RawData, load_splits

TASK_DATA = {"classification": ClassificationData, "instruct": InstructData,
             "lm": LanguageModelingData, "qa": QaData}
# Tasks whose data changes when a decoder writes the answer (task.head=generate).
GENERATE_DATA = {"classification": GenerateClassificationData, "qa": GenerateQaData}


def task_data_for(raw: RawData, data, task):
    """Check the raw splits against the task and return its tokenization/collation helper."""
    if task.head == "generate" and task.kind in GENERATE_DATA:
        return GENERATE_DATA[task.kind](raw, data, task)
    return TASK_DATA[task.kind](raw, data, task)


__all__ = ["RawData", "TuneDataModule", "load_splits", "task_data_for", "TASK_DATA"]
