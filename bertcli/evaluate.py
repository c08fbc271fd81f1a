"""Masked-LM and next-sentence (or sentence-order) metrics, computed as Google's run_pretraining.py reports them.

`evaluate` is shared by `bertcli eval` and the evaluations during training. It runs in eval
mode (no dropout) under inference_mode, over batches in a fixed order, and reports beside the
metrics the baselines that give them meaning: always guessing the most frequent masked token,
and always guessing the majority next-sentence class (the random share is not exactly 50%).
The sentence task's metrics are named after the objective (`next_sentence_*` for nsp,
`sentence_order_*` for sop); an mlm model, or data of another objective than the model's, gets
masked-LM metrics only.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from pathlib import Path

import torch

from bertcli.batches import eval_batches
from bertcli.checkpoint import load_weights, read_state, resolve_checkpoint
from bertcli.errors import UsageError
from bertcli.console import warn
from bertcli.architectures import build_model, config_from_dict
from bertcli.model import IGNORE_INDEX
from bertcli.objectives import OBJECTIVES, Objective, checkpoint_objective
from bertcli.shards import PretrainingData


def evaluate(model: torch.nn.Module, batches, device: torch.device, autocast=contextlib.nullcontext,
             sentence_task: Objective | None = OBJECTIVES["nsp"]) -> dict:
    """Metrics over `batches`; `sentence_task` names the two-way task to report (None: masked-LM only)."""
    if sentence_task is not None and not sentence_task.has_sentence_task:
        sentence_task = None
    was_training = model.training
    model.eval()
    mlm_loss = nsp_loss = 0.0
    mlm_correct = nsp_correct = masked = examples = 0
    label_counts: Counter = Counter()
    nsp_counts: Counter = Counter()
    with torch.inference_mode():
        for batch in batches:
            batch = batch.to(device)
            with autocast():
                out = model(**batch.model_inputs())
            mlm_loss += float(out.mlm_loss_sum)
            mlm_correct += int(out.mlm_correct)
            if sentence_task is not None:
                nsp_loss += float(out.nsp_loss_sum)
                nsp_correct += int(out.nsp_correct)
            masked += int(out.masked_count)
            examples += len(batch.next_sentence_labels)
            labels = batch.masked_labels[batch.masked_labels != IGNORE_INDEX]
            label_counts.update(labels.cpu().tolist())
            nsp_counts.update(batch.next_sentence_labels.cpu().tolist())
    model.train(was_training)
    if examples == 0:
        raise UsageError("nothing to evaluate: the split is empty")
    masked_lm_loss = mlm_loss / max(masked, 1)
    metrics = {
        "masked_lm_accuracy": mlm_correct / max(masked, 1),
        "masked_lm_loss": masked_lm_loss,
        "loss": masked_lm_loss,
        "perplexity": math.exp(min(masked_lm_loss, 700.0)),
        "baseline_masked_lm_accuracy": max(label_counts.values(), default=0) / max(masked, 1),
        "examples": examples,
        "masked_tokens": masked,
    }
    if sentence_task is not None:
        stem = sentence_task.sentence_metric
        metrics[f"{stem}_accuracy"] = nsp_correct / examples
        metrics[f"{stem}_loss"] = nsp_loss / examples
        metrics["loss"] = masked_lm_loss + nsp_loss / examples
        metrics[f"baseline_{stem}_accuracy"] = max(nsp_counts.values(), default=0) / examples
    return metrics


def load_model(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, dict, Path]:
    """A model in eval mode from a checkpoint or run directory, with its trainer state."""
    ckpt = resolve_checkpoint(checkpoint)
    state = read_state(ckpt)
    objective = checkpoint_objective(state, ckpt)
    model = build_model(config_from_dict(state["model_config"]), sentence_task=objective.has_sentence_task)
    model.load_state_dict(load_weights(ckpt, state))
    return model.to(device).eval(), state, ckpt


def check_compatible(state: dict, data: PretrainingData, ckpt: Path, data_dir) -> None:
    """The data must come from the checkpoint's tokenizer and fit its positions."""
    trained_on = state.get("data_signature", {})
    sig = data.signature
    if trained_on.get("tokenizer_sha256") and trained_on["tokenizer_sha256"] != sig["tokenizer_sha256"]:
        raise UsageError(f"{data_dir} was made with another tokenizer than checkpoint {ckpt}; "
                         "evaluate on data made with the checkpoint's tokenizer")
    if trained_on.get("max_seq_length") is not None and trained_on["max_seq_length"] != sig["max_seq_length"]:
        raise UsageError(f"{data_dir} has max_seq_length {sig['max_seq_length']} but checkpoint {ckpt} was trained at "
                         f"{trained_on['max_seq_length']}; make data with --max-seq-length {trained_on['max_seq_length']}")
    vocab = state["model_config"]["vocab_size"]
    if sig["vocab_size"] != vocab:
        raise UsageError(f"{data_dir} has vocab size {sig['vocab_size']} but checkpoint {ckpt} has {vocab}")
    if sig["max_seq_length"] > state["model_config"]["max_position_embeddings"]:
        raise UsageError(f"{data_dir} has max_seq_length {sig['max_seq_length']}, more than the model's "
                         f"max_position_embeddings ({state['model_config']['max_position_embeddings']})")


def run_eval(checkpoint: Path, data_dir: Path, split: str, batch_size: int, max_batches: int,
             device: torch.device, autocast) -> dict:
    if batch_size < 1 or max_batches < 0:
        raise UsageError("--batch-size must be at least 1 and --max-batches at least 0")
    data = PretrainingData([data_dir], split)
    model, state, ckpt = load_model(checkpoint, device)
    check_compatible(state, data, ckpt, data_dir)
    if len(data) == 0:
        raise UsageError(f"the {split} split of {data_dir} is empty; choose another --split or make data "
                         "with a larger --validation-fraction")
    data.verify_all()
    trained_for = checkpoint_objective(state, ckpt)
    sentence_task = data.objective if data.objective == trained_for else None
    if sentence_task is None and trained_for.has_sentence_task and data.objective.has_sentence_task:
        warn(f"checkpoint {ckpt} was trained with objective {trained_for.name}, {data_dir} was made for "
             f"{data.objective.name}: reporting masked-LM metrics only")
    metrics = evaluate(model, eval_batches(data, batch_size, max_batches), device, autocast, sentence_task)
    return {**metrics, "global_step": state["step"], "checkpoint": str(ckpt)}
