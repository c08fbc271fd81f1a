"""Pretraining: MLM + NSP (or SOP, or MLM alone: the data's objective), AdamW, warmup and decay, checkpoints, exact resume, DDP.

`Trainer` is built once (data, model, optimizer, loader), then `fit` runs the loop. One
optimizer step, top to bottom: fetch the step's micro-batches → one all-reduce of the counts
the host already knows (masked and real tokens, stop and time-up flags) → set the lr →
forward/backward each micro-batch, the MLM loss normalised by the *global* masked count (DDP
syncs gradients on the last one only) → clip → the divergence guard gates the update on the
device → step → log / evaluate / checkpoint when due.

Host–device syncs: none per step in one process, and only the counts' all-reduce under DDP
(plus the non-finite flag's max-reduce, a device-side collective the host does not wait for);
the loss, accuracy and gradient norm stay on the device until a log record is written
(system.log_interval), and the non-finite check never waits (divergence.py).

Everything random is a function of (seed, step): the data order (batches.py), the dynamic masks
and the dropout masks (seeded at every step). So the trainer's state is the step, the token
count, the time spent, the weights and the optimizer (and fp16 scaler) state — exactly what a
checkpoint holds — and N/2 steps + resume + N/2 steps equals N steps bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bertcli.batches import BatchPlan, carried_tokenizer, dynamic_masking, eval_batches, make_loader
from bertcli.checkpoint import (CONFIG_FILE, OPTIMIZER_FILE, SCALER_FILE, list_checkpoints, load_optimizer_state,
                                load_scaler_state, read_state, resolve_checkpoint, save_checkpoint, verify_files)
from bertcli.config import Config, TrainConfig, parse_duration
from bertcli.console import console
from bertcli.divergence import DivergenceGuard
from bertcli.errors import UsageError
from bertcli.evaluate import evaluate
from bertcli.fsutil import OWNER_FILE, claim_directory, own, read_owner, refuse_overlap, write_bytes_atomic
from bertcli.architectures import build_model, name_of
from bertcli.model import parameter_count
from bertcli.report import write_run_report
from bertcli.runlog import METRICS_FILE, MetricsWindow, ProgressBar, RunLog
from bertcli.runtime import Runtime, close, make_runtime, speed_settings
from bertcli.shards import PretrainingData
from bertcli.stopping import Interrupted, StopRequest
from bertcli.utilization import StepCounts, device_peak, step_flops
from bertcli.weights import load_pretrained, model_config




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
    """No weight decay on biases and LayerNorm (Google's exclusion list; ModernBERT's norms have other names)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or p.ndim < 2 else decay).append(p)  # (ndim: any norm)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    # fused: one kernel over all parameters, on CUDA and (torch >= 2.4) on the CPU, where it is ~4x
    # faster than the default per-parameter loop; the same update up to float rounding. It also
    # takes the divergence guard's found_inf flag, which makes the update conditional without a sync.
    return torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.learning_rate,
                             betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon, fused=True)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 2, step, rank]).generate_state(1)[0])


def pretrain(config: Config, resume: str | None = None, overwrite: bool = False, show_progress: bool = True) -> dict:
    runtime = make_runtime(config.system.device, config.system.precision, config.system.cpu_threads)
    try:
        trainer = Trainer(config, runtime, show_progress)
        try:
            trainer.build(resume, overwrite)
            return trainer.fit()
        finally:
            trainer.close()
    finally:
        close(runtime)


class Trainer:
    def __init__(self, config: Config, runtime: Runtime, show_progress: bool = True):
        self.config, self.runtime, self.show_progress = config, runtime, show_progress
        self.run_dir = Path(config.out_dir)
        self.step = 0  # optimizer steps done
        self.tokens_seen = 0  # non-padding tokens trained on, all ranks
        self.elapsed_before = 0.0  # seconds spent before this process (resumed runs)
        self.last_saved = -1  # the step of the newest checkpoint on disk, if this run wrote or resumed it
        self.lock = None  # DirLock on out_dir (rank 0), held from the first write to the end

    # ---- build -------------------------------------------------------------------------------

    def build(self, resume: str | None, overwrite: bool) -> None:
        c, t, s, rt = self.config, self.config.train, self.config.system, self.runtime
        if t.global_batch_size % (t.micro_batch_size * rt.world_size):
            raise UsageError(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of "
                             f"train.micro_batch_size ({t.micro_batch_size}) × processes ({rt.world_size})")
        self.data = PretrainingData(c.data_dirs, "train")
        self.validation = PretrainingData(c.data_dirs, "validation")
        self.tokenizer = carried_tokenizer(self.data, needed=c.data.masking == "dynamic")  # checkpoints carry it
        # from config.json when init_from is a published BERT, else from the model: section
        self.model_config = model_config(t.init_from, c.model, self.data.vocab_size, self.tokenizer)
        if self.data.max_seq_length > self.model_config.max_position_embeddings:
            raise UsageError(f"model.max_position_embeddings ({self.model_config.max_position_embeddings}) is smaller "
                             f"than the data's max_seq_length ({self.data.max_seq_length}); raise it or make shorter data")
        self.plan = BatchPlan(np.diff(self.data.cumulative), t.global_batch_size, t.micro_batch_size, rt.world_size, c.seed)
        self.remask = dynamic_masking(self.data, c.data, self.tokenizer)
        self.objective = self.data.objective  # the data decides: nsp and sop train the two-way head, mlm has none
        if self.objective.has_sentence_task and name_of(self.model_config) == "modernbert":
            raise UsageError(f"model.architecture modernbert trains masked-LM only (ModernBERT has no sentence head), "
                             f"but data.dir holds {self.objective.name} data; make it with `make-data --objective mlm`")
        ckpt = self._checkpoint_to_resume(resume)

        torch.manual_seed(c.seed)
        self.model = build_model(self.model_config, speed_settings(s), self.objective.has_sentence_task)
        state = None
        if ckpt is not None:
            state = read_state(ckpt)
            self._check_resume(state, ckpt)
            verify_files(ckpt, state, [OPTIMIZER_FILE, SCALER_FILE])
            load_pretrained(self.model, ckpt)
        elif t.init_from:
            load_pretrained(self.model, Path(t.init_from))
        self.model.to(rt.device)
        self.optimizer = make_optimizer(self.model, t)
        self.scaler = rt.grad_scaler()
        if ckpt is not None:
            self._load_state(ckpt, state)
        self._claim_out_dir(resume, ckpt, overwrite)  # the first write: everything above is validated

        self.forward_model = torch.compile(self.model) if s.compile else self.model
        if rt.distributed:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.forward_model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
        self.loader = make_loader(self.data, self.plan, rt.rank, self.remask, self.step, t.max_steps,
                                  c.data.num_workers, pin_memory=rt.device.type == "cuda")
        self.guard = DivergenceGuard(rt.device, rt.precision == "fp16", rt.distributed, self.run_dir)
        self.peak = device_peak(rt.device, rt.precision, s.peak_tflops)  # on the CPU: measured now, briefly
        self.window = MetricsWindow(rt.device, self.objective.sentence_log, self.peak, rt.world_size)
        self.config_yaml = c.to_yaml()
        self.log = None
        if rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.run_dir / CONFIG_FILE, self.config_yaml.encode())
            own(self.run_dir, [CONFIG_FILE, METRICS_FILE], rewritten=True)  # what --overwrite may delete
            self.log = RunLog(self.run_dir, self.step if ckpt is not None else None)
            self._banner(ckpt)

    def _checkpoint_to_resume(self, resume: str | None) -> Path | None:
        """The checkpoint to resume from, or None (nothing is written here)."""
        if resume == "auto":
            found = list_checkpoints(self.run_dir)
            return found[-1] if found else None
        return resolve_checkpoint(Path(resume)) if resume else None

    def _claim_out_dir(self, resume: str | None, ckpt: Path | None, overwrite: bool) -> None:
        """Make out_dir this run's, after everything else was validated (fsutil.claim_directory):
        lock it, refuse one that holds an input or another run, clear an owned one on --overwrite
        (only the files a run wrote: anything else stops it), and mark a new one as a bertcli run."""
        out = self.run_dir
        inputs = [*self.config.data_dirs, self.config.train.init_from]
        continuing = ckpt is not None and out.resolve() in ckpt.resolve().parents  # this run's own checkpoint
        if ckpt is not None and not continuing:
            inputs.append(ckpt)
        if not self.runtime.is_main:
            return
        if continuing:
            refuse_overlap(out, inputs, "out_dir")
            self.lock = claim_directory(out, "run", resume=True, option="out_dir")
            return
        owner = read_owner(out) if out.is_dir() else None
        if resume == "auto" and owner is not None and owner["kind"] == "run":
            overwrite = True  # our own run, stopped before its first checkpoint: start it afresh
        if out.is_dir() and any(e.name != OWNER_FILE for e in out.iterdir()) and not overwrite:
            what = "holds another run" if owner is not None and owner["kind"] == "run" else "is not empty"
            raise UsageError(f"out_dir {out} {what}; pass --resume auto to continue a run there, --overwrite to "
                             "replace a run bertcli made, or set out_dir elsewhere")
        self.lock = claim_directory(out, "run", overwrite=overwrite, inputs=inputs, option="out_dir")

    def close(self) -> None:
        if getattr(self, "lock", None) is not None:
            self.lock.release()
            self.lock = None

    def _check_resume(self, state: dict, ckpt: Path) -> None:
        mine = asdict(self.model_config)
        if state["model_config"] != mine:
            diff = [k for k, v in mine.items() if state["model_config"].get(k) != v]
            raise UsageError(f"checkpoint {ckpt} is a model with different {', '.join(diff)}; resume with the same "
                             "model settings or start a new out_dir")
        trained_for = state.get("data_signature", {}).get("objective", "nsp")
        if trained_for != self.objective.name:
            raise UsageError(f"checkpoint {ckpt} was trained with objective {trained_for}, data.dir holds "
                             f"{self.objective.name} data; resume on the same data, or start a new out_dir with train.init_from")
        if state.get("data_signature", {}).get("tokenizer_sha256") != self.data.signature["tokenizer_sha256"]:
            raise UsageError(f"checkpoint {ckpt} was trained on data from another tokenizer; use the same data.dir")
        if state.get("global_batch_size") != self.config.train.global_batch_size:
            raise UsageError(f"checkpoint {ckpt} used train.global_batch_size {state.get('global_batch_size')}; "
                             "keep it the same to resume at the same data position")
        if state["step"] > self.config.train.max_steps:
            raise UsageError(f"checkpoint {ckpt} is at step {state['step']}, past train.max_steps "
                             f"({self.config.train.max_steps}); raise train.max_steps to continue it")

    def state(self) -> dict:
        """The trainer's state besides weights and optimizer: what trainer_state.json holds."""
        return {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed(),
                "epoch": self.plan.epoch_of(self.step), "global_batch_size": self.config.train.global_batch_size,
                "model_config": asdict(self.model_config), "data_signature": self.data.signature, "seed": self.config.seed}

    def _load_state(self, ckpt: Path, state: dict) -> None:
        load_optimizer_state(ckpt / OPTIMIZER_FILE, self.optimizer)
        if (ckpt / SCALER_FILE).is_file():
            load_scaler_state(ckpt / SCALER_FILE, self.scaler)
        self.step, self.tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.last_saved = self.step

    # ---- one optimizer step ------------------------------------------------------------------

    def train_step(self, micro_batches: list, masked_tokens: int, global_tokens: int, global_flops: int = 0) -> None:
        """Forward/backward this rank's micro-batches and apply the update (unless the guard holds it)."""
        t, rt, world = self.config.train, self.runtime, self.runtime.world_size
        lr = get_lr(self.step, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(self.config.seed, self.step, rt.rank))  # dropout: a function of the step
        step_loss = torch.zeros((), device=rt.device)
        for m, batch in enumerate(micro_batches):
            padded = batch.is_padded  # counted on the host by collate: reading it never waits for the GPU
            batch = batch.to(rt.device)
            last = m == len(micro_batches) - 1
            sync = self.forward_model.no_sync() if rt.distributed and not last else contextlib.nullcontext()
            with sync:
                with rt.autocast():
                    out = self.forward_model(**batch.model_inputs(padded))
                # Sum-normalised by global counts; DDP averages over ranks, so scale back up by world.
                loss = out.mlm_loss_sum / max(masked_tokens, 1)
                if self.objective.has_sentence_task:
                    loss = loss + out.nsp_loss_sum / t.global_batch_size
                self.scaler.scale(loss * world).backward()
            step_loss = step_loss + loss.detach()
            self.window.add(out, len(batch.next_sentence_labels))
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
        self.guard.gate(self.step, step_loss, grad_norm, self.optimizer, self.scaler)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += global_tokens
        self.window.end_step(grad_norm, lr, global_tokens, global_flops)

    def _reduce_counts(self, values: list[float]) -> list[float]:
        """The step's one host–device sync (DDP only): host-known counts of every rank in one all-reduce."""
        if not self.runtime.distributed:
            return values
        counts = torch.tensor(values, dtype=torch.float64, device=self.runtime.device)
        dist.all_reduce(counts)
        return counts.tolist()

    # ---- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict:
        t, rt = self.config.train, self.runtime
        max_seconds = parse_duration(t.max_time) if t.max_time else None
        self.started = time.perf_counter()
        self.last_eval = None
        batches = iter(self.loader)
        self.progress = ProgressBar(rt.is_main and self.show_progress, self.step, t.max_steps, self.objective.sentence_log)
        with StopRequest() as stop, self.progress:
            while self.step < t.max_steps:
                micro_batches = [next(batches) for _ in range(self.plan.accumulation)]
                time_up = max_seconds is not None and time.perf_counter() - self.started >= max_seconds
                masked, tokens, examples, pairs, stop_now, time_up, diverged = self._reduce_counts([
                    sum(b.num_masked for b in micro_batches), sum(b.num_tokens for b in micro_batches),
                    sum(len(b.next_sentence_labels) for b in micro_batches), sum(b.attention_pairs for b in micro_batches),
                    float(stop.requested), float(time_up), float(self.guard.known())])
                if diverged:  # some rank has seen a bad step: every rank stops here, at the same step
                    self.guard.check()
                if stop_now:
                    self._stop(stop.signum)
                if time_up:
                    if rt.is_main:
                        console.print(f"train.max_time {t.max_time} reached at step {self.step}")
                    break
                flops = step_flops(self.model_config, StepCounts(int(tokens), int(masked), int(examples), int(pairs)),
                                   self.objective.has_sentence_task)
                self.train_step(micro_batches, int(masked), int(tokens), flops)
                self._after_step()
        return self._finish()

    def _after_step(self) -> None:
        """The hooks, when due: log, evaluate, checkpoint."""
        s, step = self.config.system, self.step
        checkpoint_due = step % s.checkpoint_interval == 0
        # Log at every checkpoint too, so that no half-filled log window is lost with the process:
        # a checkpoint then holds the trainer's whole state.
        if step % s.log_interval == 0 or step == self.config.train.max_steps or checkpoint_due:
            self._write_log()
        if s.eval_interval and step % s.eval_interval == 0:
            self.last_eval = self._evaluate()
        if checkpoint_due:
            self._save()
            self._report()

    def _stop(self, signum: int | None) -> None:
        import signal
        self._write_log()
        path = self._save() if self.last_saved != self.step else None
        raise Interrupted(f"interrupted at step {self.step}; checkpoint {path or 'already saved'} — continue with "
                          "--resume auto", signum or signal.SIGTERM)

    def _finish(self) -> dict:
        s = self.config.system
        if self.window.steps:
            self._write_log()
        if self.last_saved != self.step:
            self._save()
        evaluated_at_end = s.eval_interval and self.step % s.eval_interval == 0
        final_eval = self.last_eval if evaluated_at_end else self._evaluate()
        if final_eval is None and self.runtime.is_main and len(self.validation) == 0:
            console.print("no final evaluation: the data has no validation split (make-data --validation-fraction)")
        if self.log is not None:
            self.log.close()
        report = self._report()
        return {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed(),
                "report": str(report) if report is not None else None,
                "parameters": parameter_count(self.model), "eval": final_eval, "run_dir": str(self.run_dir)}

    # ---- hooks -------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - getattr(self, "started", time.perf_counter())

    def _write_log(self) -> None:
        if not self.window.steps:
            return
        self.guard.check()  # a record is a sync anyway; never log past a step that went bad
        record = self.window.flush(self.step, self.tokens_seen, self.elapsed(), self.runtime.distributed)
        if self.log is not None:
            self.log.write(record)
            self.progress.update(self.step, record)

    def _save(self) -> Path | None:
        self.guard.check()  # never save a step that went bad
        saved = None
        if self.runtime.is_main:
            saved = save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, self.scaler, self.state(),
                                    self.config_yaml, self.config.system.keep_checkpoints, self.tokenizer)
        if self.runtime.distributed:
            dist.barrier()
        self.last_saved = self.step
        return saved

    def _report(self) -> Path | None:
        """report.html in the run directory, rebuilt from what the run has written so far (rank 0)."""
        return write_run_report(self.run_dir) if self.runtime.is_main else None

    def _evaluate(self) -> dict | None:
        t, s, rt = self.config.train, self.config.system, self.runtime
        self.guard.check()  # on every rank, before rank 0 evaluates: never evaluate past a step that went bad
        metrics = None
        if rt.is_main and len(self.validation):
            metrics = evaluate(self.model, eval_batches(self.validation, t.micro_batch_size, s.eval_batches),
                               rt.device, rt.autocast, self.objective)
            self.log.write({"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}})
            sentence = ""
            if self.objective.has_sentence_task:  # next_sentence_accuracy or sentence_order_accuracy
                stem = self.objective.sentence_metric
                sentence = (f"{stem}_accuracy {metrics[f'{stem}_accuracy']:.4f} "
                            f"(baseline {metrics[f'baseline_{stem}_accuracy']:.4f}), ")
            console.print(f"[bold]eval[/bold] step {self.step}: masked_lm_accuracy {metrics['masked_lm_accuracy']:.4f} "
                          f"(baseline {metrics['baseline_masked_lm_accuracy']:.4f}), {sentence}loss {metrics['loss']:.4f}")
        if rt.distributed:
            dist.barrier()
        return metrics

    def _banner(self, ckpt: Path | None) -> None:
        t, rt = self.config.train, self.runtime
        tokens_per_step = t.global_batch_size * self.data.max_seq_length
        where = f"resuming from {ckpt} at step {self.step}" if ckpt is not None else "starting from scratch"
        console.print(
            f"[bold]pretrain[/bold] {parameter_count(self.model) / 1e6:.2f}M parameters · {len(self.data):,} training "
            f"examples · global batch {t.global_batch_size} = micro {t.micro_batch_size} × accumulation "
            f"{self.plan.accumulation} × {rt.world_size} process(es) · ≤ {tokens_per_step:,} tokens per step · "
            f"{rt.device} {rt.precision} · {where} · out_dir {self.config.out_dir}")
        peak = f"{self.peak.tflops:.3g} TFLOP/s per device" if self.peak.tflops is not None else "no MFU"
        console.print(f"MFU against {peak} ({self.peak.source})")
