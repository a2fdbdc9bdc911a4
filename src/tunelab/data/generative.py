"""Tasks a decoder answers by writing text: `instruct` (prompt -> response through the chat
template), `lm` (a text column for masked or next-token pretraining), classification with
`task.head=generate` (prompt -> the label's words) and qa with `task.head=generate` (question and
context -> the answer's words).

The prompt and the response are tokenized apart and concatenated, so the tokens a model is trained
to write after a prompt are exactly the tokens greedy generation starts from at evaluation.
"""

from __future__ import annotations

from omegaconf import DictConfig
from transformers import (DataCollatorForLanguageModeling, DataCollatorForSeq2Seq,
                          PreTrainedTokenizerBase)

from tunelab.config import ConfigError
from tunelab.data.classification import ClassificationData
from tunelab.data.qa import QaData
from tunelab.data.sources import RawData, check_columns

IGNORE = -100   # the label index transformers' losses skip: prompt and padding tokens


def render(tokenizer: PreTrainedTokenizerBase, prompt: str,
           response: str) -> tuple[list[int], list[int]]:
    """(prompt ids ending in the assistant cue, response ids ending in the end-of-turn marker),
    through the tokenizer's chat template; without a template, `prompt\\n` then `response` + eos."""
    if tokenizer.chat_template:
        user = [{"role": "user", "content": prompt}]
        cue = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(cue):
            raise ConfigError("model.chat_template", tokenizer.chat_template,
                              "a template whose full conversation starts with the prompt it "
                              "renders for add_generation_prompt=True")
        answer = full[len(cue):]
    else:
        cue, answer = f"{prompt}\n", response + (tokenizer.eos_token or "")
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(cue), encode(answer)


def qa_prompt(question: str, context: str) -> str:
    """The user turn a decoder answers a QA row from (task=qa, task.head=generate); training,
    evaluation and an exported model all render a question through this one function. The question
    comes last: a prompt too long for data.max_length loses its start (`supervised_example`), so
    the instruction and the context's start go first and the question is always kept."""
    return (f"Answer the question with words copied from the context.\n"
            f"Context: {context}\nQuestion: {question}")


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token the template writes right after a response: where greedy generation stops."""
    _, answer = render(tokenizer, "x", "")
    return answer[0] if answer else tokenizer.eos_token_id


def label_words(label: str) -> str:
    """The words a decoder writes for a label name (`card_arrival` -> `card arrival`)."""
    return str(label).replace("_", " ")


def supervised_example(prompt_ids: list[int], response_ids: list[int], max_length: int) -> dict:
    """input_ids = prompt + response, labels IGNORE on the prompt; an over-long prompt loses its
    start, so the assistant cue and the response (what is learnt) survive truncation."""
    response_ids = response_ids[:max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)):]
    ids = prompt_ids + response_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [IGNORE] * len(prompt_ids) + response_ids, "prompt_length": len(prompt_ids)}


def _supervised_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
    """Dynamic padding to the longest row; labels padded with IGNORE."""
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)


class InstructData:
    """Prompt/response pairs for supervised fine-tuning with the loss on response tokens only."""

    kind = "instruct"
    label_names: list[str] = []

    def __init__(self, raw: RawData, data: DictConfig, task: DictConfig):
        self.prompt_column, self.response_column = data.prompt_column, data.response_column
        check_columns(raw, {"data.prompt_column": self.prompt_column,
                             "data.response_column": self.response_column})

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "prompt": self.prompt_column, "response": self.response_column}

    def encode(self, batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
        rows = [supervised_example(*render(tokenizer, str(p), str(r)), max_length)
                for p, r in zip(batch[self.prompt_column], batch[self.response_column])]
        return {key: [row[key] for row in rows] for key in rows[0]}

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
        return _supervised_collator(tokenizer)


class LanguageModelingData:
    """A text column for self-supervised training. Batches carry next-token labels (padding
    ignored); for encoders the module masks them (objective.mlm_probability) before the forward,
    the same masking the auxiliary objective uses."""

    kind = "lm"
    label_names: list[str] = []

    def __init__(self, raw: RawData, data: DictConfig, task: DictConfig):
        self.text_column = data.text_column
        check_columns(raw, {"data.text_column": self.text_column})

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "text": self.text_column}

    def encode(self, batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
        return tokenizer([str(t) for t in batch[self.text_column]], truncation=True,
                         max_length=max_length)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForLanguageModeling:
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)


class GenerateClassificationData(ClassificationData):
    """Classification answered by a decoder writing the label's words after a prompt; rows also
    carry the class index, so accuracy compares the best-scoring label with it."""

    kind = "classification-generate"

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "head": "generate", "prompt": self.prompt("{text}")}

    def prompt(self, text: str) -> str:
        return f"What {self.task.name} does this text express? {text}"

    def encode(self, batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
        texts = batch[self.text_column]
        if self.pair_column:
            texts = [f"{a}\n{b}" for a, b in zip(texts, batch[self.pair_column])]
        rows = [supervised_example(*render(tokenizer, self.prompt(str(text)),
                                           label_words(label)), max_length)
                for text, label in zip(texts, batch[self.label_column])]
        encoded = {key: [row[key] for row in rows] for key in rows[0]}
        encoded["class_label"] = [self.label_ids[label] for label in batch[self.label_column]]
        return encoded

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
        return _supervised_collator(tokenizer)


class GenerateQaData(QaData):
    """QA answered by a decoder writing the answer after `qa_prompt(question, context)`: the rows
    are QaData's (same formats, normalisation and checks), each one supervised example whose
    response is the first gold answer, with the loss on its tokens only. An unanswerable row
    (SQuAD v2) teaches the empty answer: the end-of-turn marker alone, which scores as "" against
    its gold "". Rows carry `example_id`, so em and f1 score each greedy answer against every gold
    answer of its row."""

    kind = "qa-generate"

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "columns": self.columns,
                "prompt": qa_prompt("{question}", "{context}")}

    def encode(self, batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
        rows = [supervised_example(*render(tokenizer, qa_prompt(question.strip(), context),
                                           (answers["text"] or [""])[0]), max_length)
                for question, context, answers in zip(batch["question"], batch["context"],
                                                       batch["answers"])]
        encoded = {key: [row[key] for row in rows] for key in rows[0]}
        encoded["example_id"] = batch["row"]
        return encoded

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
        return _supervised_collator(tokenizer)
