"""`bertcli glue`: fine-tune one model on GLUE's tasks, score it as the leaderboard does, and
write the test-set predictions as a leaderboard submission.

For each task and seed, one fine-tuning run (`FineTuner`, by default the core's) trains on the
task's train split and predicts its validation and test splits; this module scores the
validation predictions with the task's metrics (`metrics.py`), takes the median over seeds, and
averages the tasks into the GLUE score: a task with two metrics (MRPC, STS-B, QQP, MNLI) is
first averaged over them, then the tasks are averaged, as on the leaderboard (AX is not
scored). The submission holds, for each test split, the predictions of the seed whose task
score is the median, so that it matches the table.

Output directory (written whole or not at all, through fsutil's ownership helper):
    results.json            the contract every report reads: tasks -> metric -> median, score
    submission/*.tsv        CoLA.tsv … WNLI.tsv, MNLI-m.tsv, MNLI-mm.tsv, AX.tsv: index, prediction
    runs/TASK/seed-N/       each fine-tuning run's own output (config, metrics, predictions)
This module neither reads task files (glue_tasks.py) nor trains (the core does).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

from bertcli.errors import UsageError
from bertcli.finetune.config import load_finetune_config
from bertcli.finetune.glue_recipes import load_recipe, task_overrides
from bertcli.finetune.glue_tasks import TASKS, GlueTask, TaskData, read_task, task_names

RESULTS_FILE = "results.json"
SUBMISSION_DIR = "submission"
STSB_RANGE = (0.0, 5.0)  # STS-B scores are 0..5; the leaderboard takes predictions in that range


@dataclass
class GlueOptions:
    model: Path
    data: Path
    out: Path
    tasks: list[str] | None = None  # None: all nine (with --quick: the quick tasks)
    seeds: int = 1
    recipe: Path | None = None
    sets: list[str] = field(default_factory=list)
    quick: bool = False
    from_mnli: bool = False
    overwrite: bool = False


@dataclass
class FineTuneJob:
    """One fine-tuning run: everything the core needs, nothing GLUE-specific beyond the data."""

    task: GlueTask
    data: TaskData
    model: Path  # a model bertcli loads: the user's, or the MNLI fine-tuned model (--from-mnli)
    config: object  # the resolved finetune config (recipe, then --set); its seed is this run's
    work_dir: Path  # inside the output's temporary directory; the run writes its files here
    keep_model: bool  # write the fine-tuned model to work_dir/model (MNLI, when others start from it)


class FineTuner(Protocol):
    """What runs the fine-tuning: the core's (`CoreFineTuner`), or a baseline in the tests."""

    def check(self, model: Path, configs: list) -> None:
        """Raise UsageError if `model` cannot be fine-tuned with these configs; called before anything is written."""

    def __call__(self, job: FineTuneJob) -> dict[str, list]:
        """Predictions for every validation and test split of `job.data`, by split name: class ids
        into `task.labels` (classification) or scores (regression), one per example."""


Log = Callable[[str], None]


def run_glue(options: GlueOptions, fine_tune: FineTuner, log: Log = lambda line: None) -> dict:
    """Run every task and seed, write the output directory, return results.json's content."""
    from bertcli.fsutil import check_output_dir, output_dir, write_json_atomic

    recipe = load_recipe(options.recipe)
    names = task_names(options.tasks) if options.tasks else list(recipe["quick"]["tasks"] if options.quick else TASKS)
    if not 1 <= options.seeds <= 100:
        raise UsageError(f"--seeds {options.seeds} must be between 1 and 100")
    chained = [t for t in names if options.from_mnli and t in recipe["from_mnli"]]
    if options.from_mnli and "mnli" not in names:
        raise UsageError("--from-mnli starts RTE, MRPC and STS-B from the MNLI model: add mnli to --tasks")
    order = (["mnli"] if chained else []) + [t for t in names if not (chained and t == "mnli")]
    data, configs = _read_tasks(options, recipe, order)  # everything is read and checked before anything is written
    check_output_dir(options.out, "glue", overwrite=options.overwrite, inputs=[options.model, options.data])
    fine_tune.check(Path(options.model), list(configs.values()))
    for name in order:
        log(_read_line(data[name]))
    with output_dir(options.out, "glue", overwrite=options.overwrite, inputs=[options.model, options.data]) as tmp:
        runs: dict[str, list[dict]] = {}
        predictions: dict[str, list[dict]] = {}
        mnli_model = None
        for name in order:
            task = TASKS[name]
            start = mnli_model if name in chained else Path(options.model)
            runs[name], predictions[name] = [], []
            for i in range(options.seeds):
                config = replace(configs[name], seed=configs[name].seed + i)
                work = tmp / "runs" / name / f"seed-{config.seed}"
                work.mkdir(parents=True)
                job = FineTuneJob(task, data[name], start, config, work, keep_model=name == "mnli" and bool(chained))
                began = time.perf_counter()
                predicted = fine_tune(job)
                metrics = score_task(task, data[name], predicted)
                run = {"seed": config.seed, "metrics": metrics, "score": task_score(metrics),
                       "seconds": round(time.perf_counter() - began, 1)}
                runs[name].append(run)
                predictions[name].append(predicted)
                log(_run_line(name, run, i, options.seeds))
            if name == "mnli" and chained:
                mnli_model = tmp / "runs" / "mnli" / f"seed-{runs['mnli'][median_run(runs['mnli'])]['seed']}" / "model"
        submission = []
        if not options.quick:
            (tmp / SUBMISSION_DIR).mkdir()
            for name in order:
                best = median_run(runs[name])
                submission += write_submission(tmp / SUBMISSION_DIR, TASKS[name], data[name], predictions[name][best])
        results = summarise(options, names, runs, submission)
        write_json_atomic(tmp / RESULTS_FILE, results)
    return results


def _read_tasks(options: GlueOptions, recipe: dict, order: list[str]) -> tuple[dict, dict]:
    """Each task's data (sampled under --quick) and its resolved finetune config."""
    data, configs = {}, {}
    for name in order:
        task_data = read_task(TASKS[name], options.data)
        if options.quick:
            task_data = task_data.sample(recipe["quick"]["max_train_examples"], recipe["quick"]["max_eval_examples"])
        data[name] = task_data
        configs[name] = load_finetune_config(None, task_overrides(recipe, name, options.quick, options.sets))
    return data, configs


def _read_line(d: TaskData) -> str:
    splits = [f"{len(d.train):,} train"] + [f"{len(v):,} {k}" for k, v in d.validation.items()]
    splits += [f"{len(v):,} {k}" for k, v in d.test.items()]
    skipped = f" ({d.skipped_rows} broken rows skipped)" if d.skipped_rows else ""
    return f"{d.task.name}: {', '.join(splits)} from {d.source}{skipped}"


def _run_line(name: str, run: dict, i: int, seeds: int) -> str:
    values = "  ".join(f"{m} {100 * v:.1f}" for m, v in run["metrics"].items())
    return f"{name} seed {run['seed']} ({i + 1}/{seeds}): {values}  ({run['seconds']:.0f} s)"


# --- scoring ---------------------------------------------------------------------------------

def score_task(task: GlueTask, data: TaskData, predicted: dict[str, list]) -> dict[str, float]:
    """The task's metrics on its validation split(s): MNLI's per split, the others' on `validation`."""
    from bertcli.finetune import metrics as m

    functions = {"accuracy": m.accuracy, "f1": m.f1, "matthews_correlation": m.matthews_correlation,
                 "pearson": m.pearson, "spearman": m.spearman}
    out = {}
    for name in task.metrics:
        base, split = (name.rsplit("_", 1) if len(task.validation) > 1 else (name, "validation"))
        references = [e.label for e in data.validation[split]]
        out[name] = float(functions[base](predicted[split], references))
    return out


def task_score(metrics: dict[str, float]) -> float:
    """A task's one number: the mean of its metrics (the leaderboard's rule for two-metric tasks)."""
    return sum(metrics.values()) / len(metrics)


def glue_score(task_metrics: dict[str, dict[str, float]]) -> float | None:
    """The GLUE average: each task's metrics averaged first, then the tasks (None: no task)."""
    if not task_metrics:
        return None
    return sum(task_score(m) for m in task_metrics.values()) / len(task_metrics)


def median_run(runs: list[dict]) -> int:
    """Index of the run whose score is the median (the lower of the two middle ones for an even count)."""
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["score"], i))
    return order[(len(order) - 1) // 2]


def summarise(options: GlueOptions, names: list[str], runs: dict[str, list[dict]], submission: list[str]) -> dict:
    tasks = {name: {metric: statistics.median(r["metrics"][metric] for r in runs[name])
                    for metric in TASKS[name].metrics} for name in names}
    return {"command": "glue", "model": str(options.model), "data": str(options.data), "tasks": tasks,
            "score": glue_score(tasks), "scored_tasks": len(tasks), "seeds": options.seeds,
            "quick": options.quick, "from_mnli": options.from_mnli,
            "runs": {name: runs[name] for name in names}, "submission": submission}


# --- submission ------------------------------------------------------------------------------

def write_submission(directory: Path, task: GlueTask, data: TaskData, predicted: dict[str, list]) -> list[str]:
    """One `index<TAB>prediction` file per test split, under the leaderboard's names: label strings
    for the NLI tasks, 0/1 for the others, STS-B's score clipped to 0..5 with three decimals."""
    from bertcli.fsutil import write_bytes_atomic

    written = []
    for split in task.test:
        if split.name not in data.test:
            continue
        examples, values = data.test[split.name], predicted[split.name]
        if len(values) != len(examples):
            raise RuntimeError(f"{task.name} {split.name}: {len(values)} predictions for {len(examples)} examples")
        lines = ["index\tprediction"]
        for example, value in zip(examples, values):
            lines.append(f"{example.index}\t{_prediction_text(task, value)}")
        write_bytes_atomic(directory / split.submission, ("\n".join(lines) + "\n").encode())
        written.append(split.submission)
    return written


def _prediction_text(task: GlueTask, value) -> str:
    if task.regression:
        low, high = STSB_RANGE
        return f"{min(max(float(value), low), high):.3f}"
    return task.labels[int(value)]


# --- the table -------------------------------------------------------------------------------

def glue_table(results: dict):
    """Each task's median metrics and score, then the GLUE average, in percent as papers print them."""
    from rich import box
    from rich.table import Table

    seeds = results["seeds"]
    title = f"GLUE validation, median of {seeds} seed{'s' if seeds > 1 else ''}" + (" (--quick: a probe, not a "
                                                                                     "GLUE score)" if results["quick"] else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("task")
    table.add_column("metrics")
    table.add_column("score", justify="right")
    for name, metrics in results["tasks"].items():
        values = "  ".join(f"{_short(m)} {100 * v:.1f}" for m, v in metrics.items())
        table.add_row(name, values, f"{100 * task_score(metrics):.1f}")
    n = results["scored_tasks"]
    label = f"average of all {n} tasks" if n == len(TASKS) else f"average of {n} of {len(TASKS)} tasks"
    score = results["score"]
    table.add_section()
    table.add_row("GLUE", label, "-" if score is None else f"{100 * score:.1f}")
    return table


def _short(metric: str) -> str:
    return {"matthews_correlation": "mcc", "accuracy_matched": "acc-m", "accuracy_mismatched": "acc-mm",
            "accuracy": "acc"}.get(metric, metric)


# --- the core's fine-tuning ------------------------------------------------------------------

class CoreFineTuner:
    """Fine-tune with the core (`trainer.finetune_one`), as `bertcli finetune` does.

    A task's validation splits (MNLI's two) go in as one split and its test splits (MNLI's
    two and AX) as one, and come back apart. Each run writes config.yaml, metrics.jsonl (a
    record per epoch) and run.json to its work directory, and model/ (a Hugging Face
    BertForSequenceClassification) when asked to keep it.
    """

    def __init__(self, log: Log = lambda line: None):
        self.log = log
        self.models: dict[Path, object] = {}

    def _model(self, path: Path):
        from bertcli.finetune.loading import load_model_for_finetune

        if path not in self.models:
            self.models[path] = load_model_for_finetune(path)
            for note in self.models[path].notes:
                self.log(note)
        return self.models[path]

    def check(self, model: Path, configs: list) -> None:
        positions = self._model(Path(model)).config.max_position_embeddings
        longest = max(c.data.max_seq_length for c in configs)
        if longest > positions:
            raise UsageError(f"data.max_seq_length {longest} is more than the {positions} positions of --model {model}; "
                             f"pass --set data.max_seq_length={positions}")

    def __call__(self, job: FineTuneJob) -> dict[str, list]:
        import json

        from bertcli.finetune.data import Example
        from bertcli.finetune.run import save_classifier
        from bertcli.finetune.trainer import finetune_one
        from bertcli.fsutil import write_bytes_atomic, write_json_atomic
        from bertcli.runtime import resolve_device

        task, data, config = job.task, job.data, job.config
        if config.system.cpu_threads:
            import torch

            torch.set_num_threads(config.system.cpu_threads)
        spec = self._model(Path(job.model))
        task_type = "regression" if task.regression else "classification"
        ids = None if task.regression else list(range(len(task.labels)))

        def core(splits: dict) -> list:
            return [Example(e.text, e.text_pair, e.label) for examples in splits.values() for e in examples]

        records = []

        def progress(record: dict) -> None:
            records.append(record)
            shown = "  ".join(f"{k.split('/')[1]} {100 * v:.1f}" for k, v in record.items() if k.startswith("validation/"))
            self.log(f"  {task.name} seed {config.seed} epoch {record['epoch']}/{config.train.epochs}: "
                     f"train_loss {record['train_loss']:.4f}  {shown}")

        run = finetune_one(spec, core({"train": data.train}), core(data.validation), core(data.test) or None,
                           task_type, ids, config, device=resolve_device(config.system.device), log=progress)
        write_bytes_atomic(job.work_dir / "config.yaml", config.to_yaml().encode())
        write_bytes_atomic(job.work_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
        write_json_atomic(job.work_dir / "run.json", {k: v for k, v in run.results.items() if k != "epochs"})
        if job.keep_model:
            save_classifier(job.work_dir / "model", spec, run, task_type, None if task.regression else list(task.labels),
                            config)
        run.model.to("cpu")
        outputs = {}
        for splits, values in ((data.validation, run.validation_outputs), (data.test, run.test_outputs)):
            start = 0
            for name, examples in splits.items():
                outputs[name] = values[start:start + len(examples)].tolist()
                start += len(examples)
        return outputs
