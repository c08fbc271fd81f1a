"""One fine-tuning run: a classifier on a model, trained for some epochs, validated after each.

The loop shares the pretrainer's habits: the learning rate is a pure function of the step
(train.get_lr: linear warmup over warmup_ratio of the steps, linear decay to 0), no per-step
host–device sync (the loss sums stay on the device until the epoch ends), and every random
draw comes from its own named seed stream: the classifier's (and, with init random, the
whole model's) initialisation, each epoch's data order, and each step's dropout masks. The same
seed and data therefore give the same run, and changing one stream (say, the order) leaves the
others as they were.

This module neither reads files nor writes any (data.py and run.py do).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from bertcli.config import TrainConfig
from bertcli.finetune.config import FinetuneConfig
from bertcli.finetune.data import Encoded, Example, collate, encode, label_ids, regression_targets
from bertcli.finetune.loading import ModelSpec, build_classifier
from bertcli.finetune.metrics import task_metrics
from bertcli.model import BertForSequenceClassification
from bertcli.train import get_lr, param_groups

# the seed streams: np.random.SeedSequence([seed, STREAM, ...]) — never shared between draws of different kinds
STREAM_INIT, STREAM_ORDER, STREAM_DROPOUT = 11, 12, 13
INITS = ("pretrained", "random")


def stream_seed(seed: int, stream: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, stream, *keys]).generate_state(1)[0])


@dataclass
class FinetuneRun:
    """What finetune_one returns: `results` (JSON-ready) and the trained model (in eval mode, on the device)."""

    results: dict
    model: BertForSequenceClassification
    validation_outputs: np.ndarray  # predicted label ids, or values (regression), per validation example
    test_outputs: np.ndarray | None
    notes: list[str] = field(default_factory=list)


def schedule(config: FinetuneConfig, steps: int) -> TrainConfig:
    """The pretrainer's schedule settings for `steps` optimizer steps of this recipe."""
    t = config.train
    return TrainConfig(max_steps=steps, warmup_steps=int(round(t.warmup_ratio * steps)), learning_rate=t.learning_rate,
                       schedule="linear", weight_decay=t.weight_decay, adam_beta1=t.adam_beta1,
                       adam_beta2=t.adam_beta2, adam_epsilon=t.adam_epsilon, grad_clip=t.grad_clip)


def as_encoded(spec: ModelSpec, split, task_type: str, labels: list | None, max_seq_length: int,
               where: str, labelled: bool = True) -> Encoded:
    """A split of Examples encoded with the model's tokenizer (an Encoded split is passed through)."""
    if split is None or isinstance(split, Encoded):
        return split
    examples = [e if isinstance(e, Example) else Example(*e) for e in split]
    if not examples:
        from bertcli.errors import UsageError
        raise UsageError(f"{where} is empty; give a split with at least one example")
    targets = None
    if labelled:
        targets = (regression_targets(examples, where) if task_type == "regression"
                   else label_ids(examples, labels, where, "the training split"))
    return encode(spec.tokenizer, examples, max_seq_length, targets)


def predict(model: BertForSequenceClassification, split: Encoded, batch_size: int, device: torch.device,
            pad_id: int) -> np.ndarray:
    """Logits of every example of `split`, in order: (N, num_labels)."""
    was_training = model.training
    model.eval()
    out = []
    # sorted by length, so that batches hold similar lengths and pad little; put back in order after
    order = np.argsort([len(ids) for ids in split.ids], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            b = collate(split, order[start:start + batch_size], pad_id).to(device)
            out.append(model(b.input_ids, b.token_type_ids, b.attention_mask).float())
    logits = torch.cat(out).cpu().numpy()
    model.train(was_training)
    result = np.empty_like(logits)
    result[order] = logits
    return result


def outputs_of(logits: np.ndarray, task_type: str) -> np.ndarray:
    return logits[:, 0] if task_type == "regression" else logits.argmax(-1)


def finetune_one(model: ModelSpec, train, validation, test, task_type: str, labels: list | None,
                 config: FinetuneConfig, seed: int | None = None, init: str = "pretrained",
                 device: torch.device | str = "cpu", log=None) -> FinetuneRun:
    """Fine-tune `model` on `train`, validate on `validation` after every epoch, predict `test`.

    Splits are lists of Example (text, text_pair or None, label) or already-encoded splits;
    `labels` the label values in id order (data.label_names(train)) for classification, None
    for regression; `seed` defaults to config.seed; `log(record)` is called with each epoch's
    record (a dict). Returns a FinetuneRun; `results` holds `validation` (the last epoch's
    metrics), `epochs` (each epoch's), the truncation counts and the speed.
    """
    from bertcli.errors import UsageError

    if task_type not in ("classification", "regression"):
        raise UsageError(f"--task-type {task_type!r} is not one of classification, regression")
    if init not in INITS:
        raise UsageError(f"--init {init!r} is not one of {', '.join(INITS)}")
    seed = config.seed if seed is None else seed
    device = torch.device(device)
    length = config.data.max_seq_length
    if length > model.config.max_position_embeddings:
        raise UsageError(f"data.max_seq_length {length} is more than the model's {model.config.max_position_embeddings} "
                         "positions; lower it")
    num_labels = 1 if task_type == "regression" else len(labels)
    train = as_encoded(model, train, task_type, labels, length, "--train")
    validation = as_encoded(model, validation, task_type, labels, length, "--validation")
    test = as_encoded(model, test, task_type, labels, length, "--test", labelled=False)
    pad_id = model.tokenizer.pad_id

    torch.manual_seed(stream_seed(seed, STREAM_INIT))
    net, notes = build_classifier(model, num_labels, config.model.classifier_dropout, init,
                                  config.system.fast_dropout and device.type == "cpu")
    net.to(device).train()
    t = config.train
    steps_per_epoch = -(-len(train) // t.batch_size)
    sched = schedule(config, steps_per_epoch * t.epochs)
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(param_groups(net, t.weight_decay), lr=t.learning_rate,
                                  betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon, fused=fused)
    clip = t.grad_clip if t.grad_clip > 0 else float("inf")

    epochs, step, trained, started = [], 0, 0, time.perf_counter()
    train_seconds = 0.0
    for epoch in range(1, t.epochs + 1):
        order = np.random.default_rng(stream_seed(seed, STREAM_ORDER, epoch)).permutation(len(train))
        loss_sum = torch.zeros((), device=device)
        epoch_started, epoch_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(order), t.batch_size):
            batch = collate(train, order[start:start + t.batch_size], pad_id).to(device)
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, sched)
            torch.manual_seed(stream_seed(seed, STREAM_DROPOUT, step))
            logits = net(batch.input_ids, batch.token_type_ids, batch.attention_mask)
            if task_type == "regression":
                loss = F.mse_loss(logits[:, 0].float(), batch.targets.float())
            else:
                loss = F.cross_entropy(logits.float(), batch.targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * len(batch.input_ids)
            step += 1
        trained += len(order)
        seconds, cpu_seconds = time.perf_counter() - epoch_started, time.process_time() - epoch_cpu
        train_seconds += seconds
        logits = predict(net, validation, config.system.eval_batch_size, device, pad_id)
        metrics = task_metrics(task_type, outputs_of(logits, task_type), validation.targets, num_labels)
        record = {"seed": seed, "init": init, "epoch": epoch, "step": step, "train_loss": float(loss_sum) / len(order),
                  "learning_rate": get_lr(step - 1, sched), "seconds": round(seconds, 3),
                  "cpu_seconds": round(cpu_seconds, 3),
                  **{f"validation/{k}": v for k, v in metrics.items()}}
        epochs.append(record)
        if log is not None:
            log(record)
    validation_outputs = outputs_of(logits, task_type)
    test_outputs = None
    if test is not None:
        test_outputs = outputs_of(predict(net, test, config.system.eval_batch_size, device, pad_id), task_type)
    net.eval()
    results = {
        "seed": seed, "init": init, "validation": metrics, "epochs": epochs, "steps": step,
        "train_examples": len(train), "validation_examples": len(validation),
        "test_examples": None if test is None else len(test),
        "truncated": {"train": train.truncated, "validation": validation.truncated,
                      "test": None if test is None else test.truncated},
        "train_examples_per_second": trained / train_seconds if train_seconds > 0 else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return FinetuneRun(results, net, validation_outputs, test_outputs, notes)
