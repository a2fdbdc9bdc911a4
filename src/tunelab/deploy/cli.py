"""The console scripts `tunelab-eval`, `tunelab-export` and `tunelab-predict`.

Results go to stdout (the eval run id and its metrics, the model URI, predictions), progress to
stderr. Bad input (an unknown run, a run that is not a finished training run, a metric no run
has, an adapter that cannot merge, missing columns) exits with code 2 and one clear line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from tunelab.config import ConfigError
from tunelab.deploy.evaluate import evaluate
from tunelab.deploy.export import export
from tunelab.deploy.predict import (
    frame_for_texts,
    load,
    model_params,
    predict_frame,
    read_table,
    write_table,
)
from tunelab.deploy.runs import (
    DeployError,
    best_run,
    connect,
    finished_train_run,
    lower_is_better,
    metric_key,
)

STORE_HELP = "MLflow tracking URI (default: the embedded store, sqlite under ./mlruns/)"


def _guarded(prog: str, body: Callable[[], None]) -> int:
    """Run a command body; bad input becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        body()
    except (DeployError, ConfigError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "tunelab-eval", description="Evaluate a finished training run's weights on a split of its "
        "own data or a new labelled file; record the metrics on a new `eval` run.")
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--data-file", help="labelled .csv/.tsv/.json/.jsonl/.parquet with the "
                                            "columns the run trained on (text and label; "
                                            "question, context and answer, or a SQuAD JSON "
                                            "file; prompt and response; text for lm)")
    parser.add_argument("--split", default="test", help="split of the run's own data (default: "
                                                        "test); ignored with --data-file")
    parser.add_argument("--tracking-uri", help=STORE_HELP)
    args = parser.parse_args(argv)

    def body() -> None:
        client = connect(args.tracking_uri)
        run = evaluate(client, finished_train_run(client, args.run_id), args.split,
                          args.data_file)
        print(json.dumps({"eval_run": run.info.run_id, "source_run": args.run_id,
                          **run.data.metrics}))
    return _guarded(parser.prog, body)


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "tunelab-export", description="Build a deployable MLflow Model from a finished training "
        "run (or the best one of an experiment), optionally registered; prints its model URI.")
    parser.add_argument("run_id", metavar="RUN_ID", nargs="?")
    parser.add_argument("--experiment", help="with --best: pick the run from this experiment")
    parser.add_argument("--best", metavar="METRIC",
                        help="acc, f1, loss, ... (read as val/METRIC) or a full key such as "
                             "test/f1; loss and ppl keys are minimised, others maximised")
    parser.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                        help="fold LoRA/DoRA/IA3 weights into the base (default) or keep the "
                             "adapter on its recorded base (--no-merge)")
    parser.add_argument("--register", metavar="NAME", help="register in the Model Registry")
    parser.add_argument("--alias", help="registry alias for the new version (with --register)")
    parser.add_argument("--tracking-uri", help=STORE_HELP)
    args = parser.parse_args(argv)
    if bool(args.run_id) == bool(args.experiment or args.best):
        parser.error("give either RUN_ID or --experiment NAME --best METRIC")
    if not args.run_id and not (args.experiment and args.best):
        parser.error("--experiment and --best go together")

    def body() -> None:
        client = connect(args.tracking_uri)
        if args.run_id:
            run = finished_train_run(client, args.run_id)
        else:
            run = best_run(client, args.experiment, args.best)
            logging.getLogger("tunelab").info(
                "best run by %s (%s): %s", args.best,
                "lowest" if lower_is_better(metric_key(args.best)) else "highest", run.info.run_id)
        exported = export(client, run, args.merge, args.register, args.alias)
        logging.getLogger("tunelab").info("logged %s from run %s%s", exported.model_uri,
                                          exported.source_run,
                                          f"; registered as {exported.registered_uri}"
                                          if exported.registered_uri else "")
        print(exported.uri)
    return _guarded(parser.prog, body)


def predict_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "tunelab-predict", description="Predict with a logged or registered MLflow Model "
        "(models:/NAME@ALIAS, models:/<id>, runs:/<run>/<path>).")
    parser.add_argument("model_uri", metavar="MODEL_URI")
    parser.add_argument("texts", metavar="TEXT", nargs="*")
    parser.add_argument("--input-file", help="rows to predict (.csv/.tsv/.jsonl/.json/.parquet)")
    parser.add_argument("--output-file", help="where predictions go (same formats; default: "
                                              "JSON lines on stdout)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a per-request param the model declares, e.g. max_new_tokens=64 "
                             "for text generation (repeatable)")
    parser.add_argument("--tracking-uri", help=STORE_HELP)
    args = parser.parse_args(argv)
    if bool(args.texts) == bool(args.input_file):
        parser.error("give either TEXT... or --input-file F")
    if any("=" not in p for p in args.param):
        parser.error("--param takes KEY=VALUE")

    def body() -> None:
        connect(args.tracking_uri)
        model = load(args.model_uri)
        frame = read_table(args.input_file) if args.input_file else \
            frame_for_texts(model, args.texts)
        params = model_params(model, dict(p.split("=", 1) for p in args.param))
        write_table(predict_frame(model, frame, params), args.output_file)
    return _guarded(parser.prog, body)
