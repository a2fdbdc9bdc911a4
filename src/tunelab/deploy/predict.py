"""`tunelab-predict`: predictions from a logged or registered MLflow Model, from texts on the
command line or a CSV/TSV/JSONL/JSON/Parquet file, to a file of the same kinds or JSONL on stdout.

Output rows are the input columns followed by the model's outputs (`label`/`score`,
`answer`/`score`, `answer` or `response`); an input column that shares an output's name is kept as
`<name>_input`. Params (`max_new_tokens` for generation) go with every row of the request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from tunelab.deploy.runs import DeployError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_table(path: str) -> pd.DataFrame:
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DeployError(f"--input-file {path}: not one of {list(TABLE_SUFFIXES)}")
    if not file.is_file():
        raise DeployError(f"--input-file {path}: no such file (relative to {Path.cwd()})")
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(file, sep="\t" if suffix == ".tsv" else ",")
        if suffix == ".parquet":
            return pd.read_parquet(file)
        return pd.read_json(file, lines=suffix == ".jsonl", dtype=False)
    except ValueError as err:
        raise DeployError(f"--input-file {path}: not a readable {suffix} table ({err})") from None


def write_table(frame: pd.DataFrame, path: str | None) -> None:
    """To `path` in the format its suffix names, or JSON lines on stdout."""
    if path is None:
        sys.stdout.write(frame.to_json(orient="records", lines=True, force_ascii=False))
        return
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DeployError(f"--output-file {path}: not one of {list(TABLE_SUFFIXES)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".csv", ".tsv"):
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=suffix == ".jsonl", force_ascii=False)


def load(model_uri: str) -> PyFuncModel:
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        message = err.message if isinstance(err, MlflowException) else str(err)
        raise DeployError(f"cannot load model {model_uri!r}: {message}") from None


def input_names(model: PyFuncModel) -> tuple[list[str], list[str]]:
    """All and required input columns of the model's signature."""
    schema = model.metadata.get_input_schema()
    return schema.input_names(), schema.required_input_names()


def frame_for_texts(model: PyFuncModel, texts: list[str]) -> pd.DataFrame:
    """Command-line texts as the one column a single-input model takes."""
    names, required = input_names(model)
    if len(required) > 1:
        raise DeployError(f"the model takes the columns {required} together (question answering "
                          f"takes a question and its context); give them as columns of "
                          f"--input-file F (.csv/.tsv/.jsonl/.json/.parquet)")
    return pd.DataFrame({names[0]: texts})


def model_params(model: PyFuncModel, given: dict[str, str]) -> dict | None:
    """`--param KEY=VALUE` values, checked against the params the model's signature declares;
    a value that reads as JSON (`64`, `true`) is passed as that, and MLflow checks its type."""
    schema = model.metadata.get_params_schema()
    declared = {p.name: p.default for p in schema.params} if schema else {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise DeployError(f"the model takes no param(s) {unknown}; it takes "
                          f"{declared or 'none'}")
    return {key: _json_or_text(value) for key, value in given.items()} or None


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def predict_frame(model: PyFuncModel, frame: pd.DataFrame,
                  params: dict | None = None) -> pd.DataFrame:
    """The input rows with the model's outputs appended."""
    names, required = input_names(model)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DeployError(f"the input lacks the column(s) {missing} the model takes; it has "
                          f"{list(frame.columns)}")
    try:
        outputs = pd.DataFrame(model.predict(frame[[c for c in names if c in frame.columns]],
                                             params=params))
    except MlflowException as err:
        raise DeployError(f"the model refused the input: {err.message}") from None
    kept = frame.reset_index(drop=True).rename(
        columns={c: f"{c}_input" for c in frame.columns if c in outputs.columns})
    return pd.concat([kept, outputs.reset_index(drop=True)], axis=1)
