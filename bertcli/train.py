"""The pretraining loop: MLM + NSP, AdamW, warmup and decay, checkpoints, exact resume, DDP.

Read top to bottom, one optimizer step is: set the lr → fetch the step's micro-batches → count
their masked tokens over all ranks (the MLM loss is normalised by that global count, not per
micro-batch) → forward/backward each micro-batch (DDP syncs gradients on the last one only) →
clip → step → log / evaluate / checkpoint when due.

Everything random is a function of (seed, step): the data order (batches.py), the dynamic masks
and the dropout masks (seeded at every step). So a checkpoint only needs the step, weights and
optimizer state, and N/2 steps + resume + N/2 steps equals N steps exactly on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bertcli.batches import BatchPlan, MicroBatches, eval_batches
from bertcli.checkpoint import (CONFIG_FILE, OPTIMIZER_FILE, SCALER_FILE, list_checkpoints, load_torch_state,
                                read_state, resolve_checkpoint, save_checkpoint, verify_files)
from bertcli.config import Config, TrainConfig, parse_duration
from bertcli.console import console
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.evaluate import evaluate
from bertcli.fsutil import write_bytes_atomic
from bertcli.objectives import remask_params
from bertcli.model import BertConfig, BertForPreTraining, flops_per_token, parameter_count
from bertcli.runtime import Runtime, close, make_runtime, speed_settings
from bertcli.shards import PretrainingData
from bertcli.weights import load_pretrained

METRICS_FILE = "metrics.jsonl"


class Interrupted(BertcliError):
    """Ctrl-C: a checkpoint was written; the CLI exits 130."""

    exit_code = 130


def get_lr(step: int, t: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the schedule."""
    if step < t.warmup_steps:
        return t.learning_rate * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.learning_rate
    progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    if t.schedule == "cosine":
        return t.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return t.learning_rate * max(0.0, 1.0 - progress)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm (Google's exclusion list)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    # fused: one kernel over all parameters, on CUDA and (torch >= 2.4) on the CPU, where it is ~4x
    # faster than the default per-parameter loop; the same update up to float rounding.
    return torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.learning_rate,
                             betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon, fused=True)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 2, step, rank]).generate_state(1)[0])


class StopRequest:
    """First Ctrl-C asks to stop at the next step boundary (with a checkpoint); a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class RunLog:
    """metrics.jsonl, TensorBoard when installed, and the console (rank 0 only)."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            # Lines logged after the checkpoint we resume from would be logged again, and a kill
            # can leave a torn last line: keep only whole records up to the resumed step.
            kept = []
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("step", 0) <= resume_step:
                    kept.append(line)
            write_bytes_atomic(self.path, "".join(k + "\n" for k in kept).encode())
        elif resume_step is None:
            self.path.unlink(missing_ok=True)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict, prefix: str = "") -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _prepare_run_dir(config: Config, resume: str | None, overwrite: bool, runtime: Runtime) -> Path | None:
    """Return the checkpoint to resume from (or None); refuse to mix two runs in one out_dir."""
    run_dir = Path(config.out_dir)
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    if resume:
        return resolve_checkpoint(Path(resume))
    holds_run = run_dir.is_dir() and any((run_dir / n).exists() for n in (CONFIG_FILE, METRICS_FILE, "checkpoints"))
    if holds_run and not overwrite:
        raise UsageError(f"out_dir {run_dir} holds another run; pass --resume auto to continue it, "
                         "--overwrite to replace it, or set out_dir elsewhere")
    if holds_run and runtime.is_main:
        shutil.rmtree(run_dir)
    return None


def _check_resume(state: dict, model_cfg: BertConfig, data: PretrainingData, ckpt: Path, config: Config) -> None:
    if state["model_config"] != asdict(model_cfg):
        diff = [k for k, v in asdict(model_cfg).items() if state["model_config"].get(k) != v]
        raise UsageError(f"checkpoint {ckpt} is a model with different {', '.join(diff)}; resume with the same "
                         "model settings or start a new out_dir")
    trained_for = state.get("data_signature", {}).get("objective", "nsp")
    if trained_for != data.objective.name:
        raise UsageError(f"checkpoint {ckpt} was trained with objective {trained_for}, data.dir holds {data.objective.name} "
                         "data; resume on the same data, or start a new out_dir with train.init_from")
    if state.get("data_signature", {}).get("tokenizer_sha256") != data.signature["tokenizer_sha256"]:
        raise UsageError(f"checkpoint {ckpt} was trained on data from another tokenizer; use the same data.dir")
    if state.get("global_batch_size") != config.train.global_batch_size:
        raise UsageError(f"checkpoint {ckpt} used train.global_batch_size {state.get('global_batch_size')}; "
                         "keep it the same to resume at the same data position")


def _all_reduce(values: list[float], runtime: Runtime) -> list[float]:
    if not runtime.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return t.tolist()


def pretrain(config: Config, resume: str | None = None, overwrite: bool = False, show_progress: bool = True) -> dict:
    runtime = make_runtime(config.system.device, config.system.precision, config.system.cpu_threads)
    try:
        return _pretrain(config, resume, overwrite, runtime, show_progress)
    finally:
        close(runtime)


def _pretrain(config: Config, resume, overwrite, runtime: Runtime, show_progress: bool) -> dict:
    t, s = config.train, config.system
    world = runtime.world_size
    if t.global_batch_size % (t.micro_batch_size * world):
        raise UsageError(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of "
                         f"train.micro_batch_size ({t.micro_batch_size}) × processes ({world})")
    data = PretrainingData(config.data_dirs, "train")
    validation = PretrainingData(config.data_dirs, "validation")
    if data.max_seq_length > config.model.max_position_embeddings:
        raise UsageError(f"model.max_position_embeddings ({config.model.max_position_embeddings}) is smaller than the "
                         f"data's max_seq_length ({data.max_seq_length}); raise it or make shorter data")
    model_cfg = BertConfig(vocab_size=data.vocab_size, **asdict(config.model))
    run_dir = Path(config.out_dir)
    ckpt = _prepare_run_dir(config, resume, overwrite, runtime)

    objective = data.objective  # the data decides: nsp and sop train the two-way head, mlm has none
    torch.manual_seed(config.seed)
    model = BertForPreTraining(model_cfg, speed_settings(s), sentence_task=objective.has_sentence_task)
    state = {"step": 0, "tokens_seen": 0, "elapsed": 0.0}
    if ckpt is not None:
        state = read_state(ckpt)
        _check_resume(state, model_cfg, data, ckpt, config)
        verify_files(ckpt, state, [OPTIMIZER_FILE, SCALER_FILE])
        load_pretrained(model, ckpt)
    elif t.init_from:
        load_pretrained(model, Path(t.init_from))
    model.to(runtime.device)

    optimizer = make_optimizer(model, t)
    scaler = runtime.grad_scaler()
    if ckpt is not None:
        optimizer.load_state_dict(load_torch_state(ckpt / OPTIMIZER_FILE))
        if (ckpt / SCALER_FILE).is_file():
            scaler.load_state_dict(load_torch_state(ckpt / SCALER_FILE))
    step, tokens_seen = int(state["step"]), int(state["tokens_seen"])

    with console.status("verifying shards") if runtime.is_main and show_progress else contextlib.nullcontext():
        data.verify_all()
        validation.verify_all()
    plan = BatchPlan(len(data), t.global_batch_size, t.micro_batch_size, world, config.seed)
    remask = None
    if config.data.masking == "dynamic":
        opts = data.manifests[0]["options"]
        word_starts = None
        if opts.get("whole_word_mask"):
            from bertcli.tokenizer import Tokenizer
            tok = Tokenizer.load(Path(data.manifests[0]["tokenizer"]["path"]))
            if tok.sha256 != data.signature["tokenizer_sha256"]:
                raise UsageError(f"data.masking dynamic with whole-word masking needs the data's tokenizer; "
                                 f"{tok.path} has changed since the data was made")
            word_starts = tok.word_starts()
        d = config.data
        remask = remask_params(opts, data.max_seq_length, data.max_predictions, data.vocab_size, word_starts,
                                 d.masked_lm_prob, d.mask_replace_prob, d.random_replace_prob)

    forward_model = torch.compile(model) if s.compile else model
    if runtime.distributed:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[runtime.local_rank] if runtime.device.type == "cuda" else None)
    accum = plan.accumulation
    loader = torch.utils.data.DataLoader(
        MicroBatches(data, plan, runtime.rank, remask), batch_size=None,
        sampler=range(step * accum, t.max_steps * accum), num_workers=config.data.num_workers,
        pin_memory=runtime.device.type == "cuda")

    n_params = parameter_count(model)
    config_yaml = config.to_yaml()
    log = None
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(run_dir / CONFIG_FILE, config_yaml.encode())
        log = RunLog(run_dir, step if ckpt is not None else None)
        _banner(config, runtime, n_params, plan, data, step, ckpt)
    max_seconds = parse_duration(t.max_time) if t.max_time else None

    def checkpoint(at_step: int) -> Path:
        saved = None
        if runtime.is_main:
            saved = save_checkpoint(run_dir, at_step, model, optimizer, scaler, {
                "step": at_step, "tokens_seen": tokens_seen, "elapsed": elapsed_total(),
                "epoch": plan.epoch_of(at_step), "global_batch_size": t.global_batch_size,
                "model_config": asdict(model_cfg), "data_signature": data.signature, "seed": config.seed,
            }, config_yaml, s.keep_checkpoints)
        if runtime.distributed:
            dist.barrier()
        return saved

    def run_eval(at_step: int) -> dict | None:
        metrics = None
        if runtime.is_main and len(validation):
            metrics = evaluate(model, eval_batches(validation, t.micro_batch_size, s.eval_batches),
                               runtime.device, runtime.autocast, objective)
            log.write({"step": at_step, **{f"eval/{k}": v for k, v in metrics.items()}})
            sentence = ""
            if objective.has_sentence_task:
                stem = objective.sentence_metric
                sentence = (f"{stem}_accuracy {metrics[f'{stem}_accuracy']:.4f} "
                            f"(baseline {metrics[f'baseline_{stem}_accuracy']:.4f}), ")
            console.print(f"[bold]eval[/bold] step {at_step}: masked_lm_accuracy {metrics['masked_lm_accuracy']:.4f} "
                          f"(baseline {metrics['baseline_masked_lm_accuracy']:.4f}), {sentence}loss {metrics['loss']:.4f}")
        if runtime.distributed:
            dist.barrier()
        return metrics

    started = time.perf_counter()
    previous_elapsed = float(state.get("elapsed", 0.0))

    def elapsed_total() -> float:
        return previous_elapsed + time.perf_counter() - started

    window = _Window(objective.sentence_log)
    last_saved = step if ckpt is not None else -1
    last_eval = None
    progress = _ProgressBar(runtime.is_main and show_progress, step, t.max_steps, objective.sentence_log)
    batches = iter(loader)
    with StopRequest() as stop, progress:
        while step < t.max_steps:
            micro_batches = [next(batches) for _ in range(accum)]
            time_up = max_seconds is not None and time.perf_counter() - started >= max_seconds
            masked, stop_now, time_up = _all_reduce(
                [sum(b.num_masked for b in micro_batches), float(stop.requested), float(time_up)], runtime)
            if stop_now:
                path = checkpoint(step) if last_saved != step else None
                raise Interrupted(f"interrupted at step {step}; checkpoint {path or 'already saved'} — "
                                  "continue with --resume auto")
            if time_up:
                if runtime.is_main:
                    console.print(f"train.max_time {t.max_time} reached at step {step}")
                break
            lr = get_lr(step, t)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(config.seed, step, runtime.rank))  # dropout: a function of the step
            for m, batch in enumerate(micro_batches):
                # Counted on the host before the copy, so the GPU never waits for the CPU to read them.
                padded, n_tokens = batch.is_padded, batch.num_tokens
                batch = batch.to(runtime.device)
                sync = forward_model.no_sync() if runtime.distributed and m < accum - 1 else contextlib.nullcontext()
                with sync:
                    with runtime.autocast():
                        out = forward_model(**batch.model_inputs(padded))
                    # Sum-normalised by global counts; DDP averages over ranks, so scale back up by world.
                    loss = out.mlm_loss_sum / max(masked, 1)
                    if objective.has_sentence_task:
                        loss = loss + out.nsp_loss_sum / t.global_batch_size
                    scaler.scale(loss * world).backward()
                window.add(out, n_tokens, len(batch.next_sentence_labels))
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
            step_loss = window.last_step_loss(world, runtime, masked, t.global_batch_size)
            if not math.isfinite(step_loss):
                saved = list_checkpoints(run_dir)
                raise DataError(f"the loss became {step_loss} at step {step + 1}; stopped. The last good checkpoint is "
                                f"{saved[-1] if saved else 'none'}: lower train.learning_rate or use bf16/fp32, then --resume")
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_tokens = int(_all_reduce([window.step_tokens], runtime)[0])
            tokens_seen += step_tokens
            window.end_step(float(grad_norm), lr)

            if step % s.log_interval == 0 or step == t.max_steps:
                record = window.flush(step, tokens_seen, elapsed_total(), runtime)
                if runtime.is_main:
                    log.write(record)
                    progress.update(step, record)
            if s.eval_interval and step % s.eval_interval == 0:
                last_eval = run_eval(step)
            if step % s.checkpoint_interval == 0:
                checkpoint(step)
                last_saved = step
    if last_saved != step:
        checkpoint(step)
    final_eval = last_eval if (s.eval_interval and step % s.eval_interval == 0) else run_eval(step)
    summary = {"step": step, "tokens_seen": tokens_seen, "elapsed": elapsed_total(), "parameters": n_params,
               "flops_per_token": flops_per_token(model_cfg, data.max_seq_length, n_params), "eval": final_eval,
               "run_dir": str(run_dir)}
    if log is not None:
        log.close()
    return summary


class _Window:
    """Metric sums over the current log window (kept on the device; synced only when logging).

    `sentence_log` names the sentence task's metrics (nsp_loss / sop_loss); None (mlm): there are none.
    """

    def __init__(self, sentence_log: str | None = "nsp"):
        self.sentence_log = sentence_log
        self.reset()
        self.step_tokens = 0
        self._step_mlm = self._step_nsp = 0.0
        self.started = time.perf_counter()

    def reset(self):
        self.sums = {"mlm_loss": 0.0, "mlm_correct": 0.0, "masked": 0.0, "nsp_loss": 0.0, "nsp_correct": 0.0,
                     "examples": 0.0, "tokens": 0.0}
        self.grad_norms, self.lr, self.steps = [], 0.0, 0

    def add(self, out, n_tokens: int, n_examples: int) -> None:
        mlm = out.mlm_loss_sum.detach()
        self._step_mlm = self._step_mlm + mlm
        self.step_tokens += n_tokens
        sums = [("mlm_loss", mlm), ("mlm_correct", out.mlm_correct), ("masked", out.masked_count)]
        if self.sentence_log:
            nsp = out.nsp_loss_sum.detach()
            self._step_nsp = self._step_nsp + nsp
            sums += [("nsp_loss", nsp), ("nsp_correct", out.nsp_correct)]
        for key, value in sums:
            self.sums[key] = self.sums[key] + value.float()
        self.sums["examples"] += n_examples
        self.sums["tokens"] += n_tokens

    def last_step_loss(self, world, runtime, masked, global_batch) -> float:
        mlm, nsp = _all_reduce([float(self._step_mlm), float(self._step_nsp)], runtime)
        return mlm / max(masked, 1) + nsp / global_batch

    def end_step(self, grad_norm: float, lr: float) -> None:
        self.grad_norms.append(grad_norm)
        self.lr = lr
        self.steps += 1
        self.step_tokens = 0
        self._step_mlm = self._step_nsp = 0.0

    def flush(self, step: int, tokens_seen: int, elapsed: float, runtime: Runtime) -> dict:
        keys = list(self.sums)
        totals = dict(zip(keys, _all_reduce([float(self.sums[k]) for k in keys], runtime)))
        now = time.perf_counter()
        seconds = max(now - self.started, 1e-9)
        mlm_loss = totals["mlm_loss"] / max(totals["masked"], 1)
        nsp_loss = totals["nsp_loss"] / max(totals["examples"], 1)
        record = {"step": step, "tokens_seen": tokens_seen, "loss": mlm_loss, "mlm_loss": mlm_loss,
                  "mlm_accuracy": totals["mlm_correct"] / max(totals["masked"], 1)}
        if self.sentence_log:  # nsp_loss / nsp_accuracy, or sop_loss / sop_accuracy
            record["loss"] = mlm_loss + nsp_loss
            record[f"{self.sentence_log}_loss"] = nsp_loss
            record[f"{self.sentence_log}_accuracy"] = totals["nsp_correct"] / max(totals["examples"], 1)
        record.update({"lr": self.lr, "grad_norm": float(np.mean(self.grad_norms)) if self.grad_norms else 0.0,
                       "tokens_per_second": totals["tokens"] / seconds, "elapsed": elapsed})
        self.reset()
        self.started = now
        return record


class _ProgressBar:
    def __init__(self, enabled: bool, start: int, total: int, sentence_log: str | None = "nsp"):
        self.enabled, self.start, self.total, self.sentence_log = enabled, start, total, sentence_log
        self.interactive = console.is_terminal

    def __enter__(self):
        if self.enabled and self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                TimeRemainingColumn(), console=console)
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, r: dict) -> None:
        if not self.enabled:
            return
        sentence = f"{self.sentence_log}_acc {r[f'{self.sentence_log}_accuracy']:.3f} " if self.sentence_log else ""
        info = f"loss {r['loss']:.4f} mlm_acc {r['mlm_accuracy']:.3f} {sentence}{r['tokens_per_second']:,.0f} tok/s"
        if self.interactive:
            self.bar.update(self.task, completed=step, info=info)
        else:
            console.print(f"step {step}/{self.total} {info} lr {r['lr']:.2e}")

    def __exit__(self, *exc):
        if self.enabled and self.interactive:
            self.bar.__exit__(*exc)


def _banner(config: Config, runtime: Runtime, n_params: int, plan: BatchPlan, data: PretrainingData, step: int, ckpt) -> None:
    t = config.train
    tokens_per_step = t.global_batch_size * data.max_seq_length
    where = f"resuming from {ckpt} at step {step}" if ckpt is not None else "starting from scratch"
    console.print(
        f"[bold]pretrain[/bold] {n_params / 1e6:.2f}M parameters · {len(data):,} training examples · "
        f"global batch {t.global_batch_size} = micro {t.micro_batch_size} × accumulation {plan.accumulation} × "
        f"{runtime.world_size} process(es) · ≤ {tokens_per_step:,} tokens per step · {runtime.device} {runtime.precision} · "
        f"{where} · out_dir {config.out_dir}")
