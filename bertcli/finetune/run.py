"""`bertcli finetune`: read and check everything, fine-tune N seeds, write the output directory at once.

Every input is validated before the output directory is touched (a bad field, label, split,
model or tokenizer is one line, exit 2, nothing written). The output is built in a temporary
directory beside --out and swapped into place when complete, through fsutil's ownership
helpers, so Ctrl-C or SIGTERM leave no half-written output and --overwrite replaces only a
directory bertcli's finetune wrote:

    config.yaml           the resolved recipe
    metrics.jsonl         one record per seed and epoch (train loss, validation metrics)
    results.json          {"command": "finetune", "model", "tasks": {name: {metric: median}}, "score",
                          "seeds", "runs": [each seed's results], "spread", "labels", "truncated", ...}
    test_predictions.tsv  with --test: index and prediction (label or value) of the median seed's model
    model/                the median seed's model as a Hugging Face BertForSequenceClassification
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from bertcli.console import console
from bertcli.errors import UsageError
from bertcli.finetune.config import FinetuneConfig
from bertcli.finetune.data import TASK_TYPES, Fields, label_names, read_split
from bertcli.finetune.loading import ModelSpec, load_model_for_finetune
from bertcli.finetune.trainer import INITS, FinetuneRun, as_encoded, finetune_one
from bertcli.fsutil import check_output_dir, output_dir, write_bytes_atomic, write_json_atomic

KIND = "finetune"
MAX_SEEDS = 100
PRIMARY = {"classification": "accuracy", "regression": "pearson"}


@dataclass
class FinetuneOptions:
    model: Path
    train: Path
    validation: Path
    out: Path
    test: Path | None = None
    fields: Fields = Fields()
    task_type: str = "classification"
    task_name: str | None = None
    seeds: int = 1
    init: str = "pretrained"
    overwrite: bool = False

    def check(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise UsageError(f"--task-type {self.task_type!r} is not one of {', '.join(TASK_TYPES)}")
        if self.init not in INITS:
            raise UsageError(f"--init {self.init!r} is not one of {', '.join(INITS)}")
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise UsageError(f"--seeds {self.seeds} must be between 1 and {MAX_SEEDS}")
        self.fields.check()

    @property
    def name(self) -> str:
        if self.task_name:
            return self.task_name
        stem = Path(self.train).stem
        return Path(self.train).resolve().parent.name if stem == "train" else stem


def hf_classifier_config(spec: ModelSpec, model, task_type: str, labels: list | None, classifier_dropout) -> dict:
    """config.json of transformers' BertForSequenceClassification for this model."""
    from dataclasses import asdict

    from bertcli.export import hf_config

    if getattr(spec.config, "architecture", "bert") == "modernbert":
        return _modernbert_classifier_config(spec, task_type, labels, classifier_dropout)
    config = hf_config({k: v for k, v in asdict(spec.config).items() if k != "pad_token_id"}, "float32",
                       spec.config.pad_token_id)
    names = [str(x) for x in labels] if labels is not None else ["LABEL_0"]
    config.update({"architectures": ["BertForSequenceClassification"],
                   "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
                   "num_labels": len(names), "classifier_dropout": classifier_dropout,
                   "problem_type": "regression" if task_type == "regression" else "single_label_classification"})
    config.pop("tie_word_embeddings", None)
    return config


def _modernbert_classifier_config(spec: ModelSpec, task_type: str, labels: list | None, classifier_dropout) -> dict:
    """config.json of transformers' ModernBertForSequenceClassification (pooling cls) for this model."""
    from dataclasses import asdict

    from bertcli.export import modernbert_hf_config

    config = modernbert_hf_config(asdict(spec.config), "float32", spec.tokenizer)
    names = [str(x) for x in labels] if labels is not None else ["LABEL_0"]
    config.update({"architectures": ["ModernBertForSequenceClassification"],
                   "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
                   "num_labels": len(names), "classifier_dropout": classifier_dropout or 0.0, "classifier_pooling": "cls",
                   "problem_type": "regression" if task_type == "regression" else "single_label_classification"})
    return config


def save_classifier(directory: Path, spec: ModelSpec, run: FinetuneRun, task_type: str, labels: list | None,
                    config: FinetuneConfig) -> None:
    """A Hugging Face BertForSequenceClassification directory (weights, config.json, tokenizer files)."""
    from bertcli.export import _readable_by_all, write_tokenizer_files

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in run.model.state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    _readable_by_all(directory / "model.safetensors")
    write_json_atomic(directory / "config.json",
                      hf_classifier_config(spec, run.model, task_type, labels, config.model.classifier_dropout))
    files = spec.tokenizer.hf_files(spec.config.max_position_embeddings)
    if getattr(spec.config, "architecture", "bert") == "modernbert":
        from bertcli.export import without_token_types

        files = without_token_types(files)
    write_tokenizer_files(directory, spec.tokenizer, spec.config.max_position_embeddings, files)


def _median_run(runs: list[FinetuneRun], metric: str) -> int:
    """The index of the run whose `metric` is the (lower) median."""
    order = sorted(range(len(runs)), key=lambda i: runs[i].results["validation"][metric])
    return order[(len(order) - 1) // 2]


def summarize(runs: list[dict]) -> tuple[dict, dict]:
    """Median and [min, max] over seeds of every validation metric."""
    metrics = runs[0]["validation"]
    median = {k: statistics.median(r["validation"][k] for r in runs) for k in metrics}
    spread = {k: [min(r["validation"][k] for r in runs), max(r["validation"][k] for r in runs)] for k in metrics}
    return median, spread


def finetune(options: FinetuneOptions, config: FinetuneConfig, device: torch.device, progress: bool = True) -> dict:
    """Run the command; returns results.json's object."""
    options.check()
    spec = load_model_for_finetune(options.model)
    fields, length = options.fields, config.data.max_seq_length
    train = read_split(options.train, "--train", fields, split="train")
    validation = read_split(options.validation, "--validation", fields, split="validation")
    test = read_split(options.test, "--test", fields, labelled=False, split="test") if options.test else None
    labels = label_names(train, f"--train {options.train}") if options.task_type == "classification" else None
    if length > spec.config.max_position_embeddings:
        raise UsageError(f"data.max_seq_length {length} is more than the model's {spec.config.max_position_embeddings} "
                         "positions; lower it")
    encoded = [as_encoded(spec, split, options.task_type, labels, length, f"{option} {path}", labelled)
               for split, option, path, labelled in ((train, "--train", options.train, True),
                                                     (validation, "--validation", options.validation, True),
                                                     (test, "--test", options.test, False))]
    out = Path(options.out)
    inputs = [p for p in (options.model, options.train, options.validation, options.test) if p is not None]
    check_output_dir(out, KIND, overwrite=options.overwrite, inputs=inputs)  # before any training
    for note in spec.notes if options.init == "pretrained" else []:
        console.print(note)
    truncated = {name: e.truncated for name, e in zip(("train", "validation", "test"), encoded) if e is not None}
    if any(truncated.values()):
        console.print("truncated to data.max_seq_length " + str(length) + ": " +
                      ", ".join(f"{n} {c:,} of {len(e):,}" for (n, c), e in zip(truncated.items(), encoded) if c))
    seeds = [config.seed + i for i in range(options.seeds)]
    with output_dir(out, KIND, overwrite=options.overwrite, inputs=inputs) as tmp:
        write_bytes_atomic(tmp / "config.yaml", config.to_yaml().encode())
        with open(tmp / "metrics.jsonl", "w", encoding="utf-8") as log_file:
            def log(record):
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                if progress:
                    shown = " ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in record.items() if k.startswith("validation/"))
                    console.print(f"seed {record['seed']} epoch {record['epoch']}: train_loss {record['train_loss']:.4f} "
                                  f"· validation {shown}")

            console.print(f"[bold]finetune[/bold] {options.name}: {len(train):,} train · {len(validation):,} validation"
                          + (f" · {len(test):,} test" if test else "") + f" · {options.task_type}"
                          + (f" ({len(labels)} labels)" if labels else "") + f" · init {options.init} · "
                          f"seeds {', '.join(map(str, seeds))} · {device}")
            runs = []
            for seed in seeds:
                run = finetune_one(spec, encoded[0], encoded[1], encoded[2], options.task_type, labels, config,
                                   seed, options.init, device, log)
                run.model.to("cpu")
                runs.append(run)
        primary = PRIMARY[options.task_type]
        chosen = runs[_median_run(runs, primary)]
        median, spread = summarize([r.results for r in runs])
        results = {"command": KIND, "model": str(options.model), "tasks": {options.name: median},
                   "score": median[primary], "seeds": len(seeds), "init": options.init,
                   "task_type": options.task_type, "metric": primary, "spread": spread,
                   "labels": [str(x) for x in labels] if labels else None,
                   "model_seed": chosen.results["seed"], "truncated": truncated,
                   "runs": [{k: v for k, v in r.results.items() if k != "epochs"} for r in runs]}
        save_classifier(tmp / "model", spec, chosen, options.task_type, labels, config)
        if chosen.test_outputs is not None:
            rows = ["index\tprediction"] + [f"{i}\t{_shown(v, labels)}" for i, v in enumerate(chosen.test_outputs)]
            write_bytes_atomic(tmp / "test_predictions.tsv", ("\n".join(rows) + "\n").encode())
        write_json_atomic(tmp / "results.json", results)
    return results


def _shown(value, labels: list | None) -> str:
    return str(labels[int(value)]) if labels is not None else f"{float(value):.6g}"


def print_results(results: dict) -> None:
    from rich.table import Table

    table = Table(title=f"finetune: validation, {results['seeds']} seed(s), init {results['init']}")
    table.add_column("metric")
    table.add_column("median", justify="right")
    table.add_column("min … max", justify="right")
    for task, metrics in results["tasks"].items():
        for k, v in metrics.items():
            lo, hi = results["spread"][k]
            table.add_row(k, f"{v:.4f}", f"{lo:.4f} … {hi:.4f}")
    console.print(table)
    console.print(f"model (seed {results['model_seed']}) and results in the output directory")
