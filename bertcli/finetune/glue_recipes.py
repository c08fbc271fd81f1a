"""GLUE's per-task fine-tuning recipe, the `--quick` probe, and how a recipe file is read.

The recipe is MosaicBERT's (mosaicml/examples, `examples/bert/src/glue/finetuning_jobs.py`,
which ModernBERT's GLUE harness also starts from): per-task learning rate, epochs and batch
size; AdamW with betas (0.9, 0.98) and epsilon 1e-6; linear warmup over 6 % of the steps, then
linear decay to 0; RTE, MRPC and STS-B optionally start from the MNLI fine-tuned model.
MosaicBERT's weight decay is Composer's decoupled one (a fraction of the weights per step at the
peak learning rate); torch's AdamW multiplies weight_decay by the learning rate, so the values
here are MosaicBERT's divided by the task's learning rate (0.1 everywhere, 1.0 for RTE).
Sequences are cut at 128 tokens, as in Google's BERT and Hugging Face's run_glue (MosaicBERT
uses 256). WNLI, which MosaicBERT leaves out, takes Hugging Face's run_glue recipe (2e-5, 3
epochs, batch 32).

Keys are the fine-tuning config's (`bertcli finetune --print-config`); precedence, lowest first:
`all`, the task's entry, `quick.set` under --quick, then the command line's --set.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bertcli.errors import UsageError
from bertcli.finetune.glue_tasks import TASKS

MAX_RECIPE_BYTES = 1 << 16


def _task(lr: float, epochs: int, batch: int, weight_decay: float = 0.1) -> dict:
    return {"train.learning_rate": lr, "train.epochs": epochs, "train.batch_size": batch,
            "train.weight_decay": weight_decay}


RECIPE = {
    "all": {"data.max_seq_length": 128, "train.warmup_ratio": 0.06, "train.adam_beta1": 0.9,
            "train.adam_beta2": 0.98, "train.adam_epsilon": 1.0e-6},
    "tasks": {
        "cola": _task(5.0e-5, 10, 32),
        "sst2": _task(3.0e-5, 3, 16),
        "mrpc": _task(8.0e-5, 10, 32),
        "stsb": _task(3.0e-5, 10, 32),
        "qqp": _task(3.0e-5, 5, 16),
        "mnli": _task(5.0e-5, 3, 48),
        "qnli": _task(1.0e-5, 10, 16),
        "rte": _task(1.0e-5, 3, 16, weight_decay=1.0),
        "wnli": _task(2.0e-5, 3, 32, weight_decay=0.0),
    },
    # with --from-mnli, these tasks start from the MNLI fine-tuned model (its classifier replaced)
    "from_mnli": ["mrpc", "stsb", "rte"],
    # --quick: a first look in minutes on a laptop CPU at a small model, not a GLUE score. One epoch of
    # 2,000 examples is 125 steps: at bert-base's rates a 1M-parameter model predicts one class throughout
    "quick": {"tasks": ["sst2", "rte"], "max_train_examples": 2000, "max_eval_examples": 500,
              "set": {"train.epochs": 1, "train.learning_rate": 1.0e-3}},
}

HEADER = """\
# bertcli glue's recipe (what `bertcli glue --print-recipe` prints; pass an edited copy with --recipe).
# Per-task learning rate, epochs and batch size are MosaicBERT's (mosaicml/examples, examples/bert/
# src/glue/finetuning_jobs.py); weight_decay is MosaicBERT's decoupled value divided by the learning
# rate, for torch's AdamW. WNLI takes Hugging Face run_glue's 2e-5 x 3 epochs. Keys are the finetune
# config's; precedence: all < tasks.<task> < quick.set (with --quick) < --set.
"""


def recipe_yaml(recipe: dict = RECIPE) -> str:
    rest = {k: v for k, v in recipe.items() if k != "all"}
    return (HEADER + yaml.safe_dump({"all": recipe["all"]}, sort_keys=False, default_flow_style=False)
            + yaml.safe_dump(rest, sort_keys=False, default_flow_style=None, width=110))


def load_recipe(path: Path | None) -> dict:
    """The built-in recipe, or a YAML file in its shape, checked key by key."""
    if path is None:
        return RECIPE
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--recipe {path} does not exist; `bertcli glue --print-recipe` writes one to start from")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise UsageError(f"--recipe {path} is larger than {MAX_RECIPE_BYTES >> 10} KiB; a recipe is a few dozen keys")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f"--recipe {path} is not valid YAML; fix the syntax") from None
    problems = recipe_problems(recipe)
    if problems:
        raise UsageError(f"--recipe {path}: " + "; ".join(problems))
    return recipe


def recipe_problems(recipe) -> list[str]:
    if not isinstance(recipe, dict):
        return ["must be a mapping with all, tasks, from_mnli and quick"]
    p = [f"unknown key {k!r} (keys: {', '.join(RECIPE)})" for k in recipe if k not in RECIPE]
    missing = [k for k in RECIPE if k not in recipe]
    p += [f"{k} is missing" for k in missing]
    if missing:
        return p
    p += _settings_problems(recipe["all"], "all")
    tasks = recipe["tasks"]
    if not isinstance(tasks, dict):
        p.append("tasks must map task names to settings")
    else:
        p += [f"tasks.{t}: not a GLUE task ({' '.join(TASKS)})" for t in tasks if t not in TASKS]
        for t, settings in tasks.items():
            p += _settings_problems(settings, f"tasks.{t}")
    if not isinstance(recipe["from_mnli"], list) or any(t not in TASKS or t == "mnli" for t in recipe["from_mnli"]):
        p.append("from_mnli must list GLUE tasks other than mnli")
    quick = recipe["quick"]
    if not isinstance(quick, dict) or set(quick) != set(RECIPE["quick"]):
        p.append(f"quick must have exactly the keys {', '.join(RECIPE['quick'])}")
    else:
        if not isinstance(quick["tasks"], list) or not quick["tasks"] or any(t not in TASKS for t in quick["tasks"]):
            p.append("quick.tasks must list GLUE tasks")
        for key in ("max_train_examples", "max_eval_examples"):
            if not isinstance(quick[key], int) or isinstance(quick[key], bool) or not 1 <= quick[key] <= 10**7:
                p.append(f"quick.{key} must be an integer from 1 to 10000000")
        p += _settings_problems(quick["set"], "quick.set")
    return p


def _settings_problems(settings, where: str) -> list[str]:
    if not isinstance(settings, dict):
        return [f"{where} must map finetune config keys (train.learning_rate, …) to values"]
    return [f"{where}.{k}: give a plain value" for k, v in settings.items()
            if not isinstance(k, str) or isinstance(v, (dict, list))]


def task_overrides(recipe: dict, task: str, quick: bool, sets: list[str]) -> list[str]:
    """The `--set` assignments that turn the finetune defaults into this task's recipe."""
    layers = [recipe["all"], recipe["tasks"].get(task, {})] + ([recipe["quick"]["set"]] if quick else [])
    merged = {k: v for layer in layers for k, v in layer.items()}
    return [f"{k}={_yaml_scalar(v)}" for k, v in merged.items()] + list(sets)


def _yaml_scalar(value) -> str:
    """A value as YAML writes it, so the config reads it back as the same type (5.0e-05, not '5e-05')."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n").removesuffix("\n...")
