"""What a run reports: metrics.jsonl (+ TensorBoard when installed), the console, a progress bar.

`MetricsWindow` keeps the sums of a log window on the device and reads them back only when a
record is written (every system.log_interval steps), so logging costs no host–device sync
in the steps between.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from bertcli.console import console
from bertcli.fsutil import own, write_bytes_atomic
from bertcli.utilization import Peak, mfu, peak_memory_mb

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """metrics.jsonl, TensorBoard when installed (rank 0 only)."""

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
                if isinstance(record, dict) and isinstance(record.get("step", 0), int) and record.get("step", 0) <= resume_step:
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
        else:  # the event file is created now: record it as the run's (--overwrite may delete it)
            tb_dir = run_dir / "tensorboard"
            own(run_dir, [f"tensorboard/{p.name}" for p in tb_dir.glob("events.out.tfevents.*")], rewritten=True)

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


class MetricsWindow:
    """Sums over the current log window: model outputs on the device, counts on the host.

    `sentence_log` names the sentence task's metrics (nsp_loss / sop_loss ...); None (mlm): there are none.
    `peak` is one device's peak for MFU (utilization.py); MFU is left out of the records without it.
    """

    DEVICE_SUMS = ("mlm_loss", "mlm_correct", "masked", "nsp_loss", "nsp_correct")

    def __init__(self, device: torch.device, sentence_log: str | None = "nsp", peak: Peak | None = None,
                 world_size: int = 1):
        self.device, self.sentence_log = device, sentence_log
        self.peak, self.world_size = peak, world_size
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.DEVICE_SUMS), device=self.device)
        self.grad_norm_sum = torch.zeros((), device=self.device)
        self.examples = self.tokens = self.steps = self.flops = 0
        self.lr = 0.0
        self.started = time.perf_counter()

    def add(self, out, num_examples: int) -> None:
        if self.sentence_log:
            values = (out.mlm_loss_sum.detach(), out.mlm_correct, out.masked_count, out.nsp_loss_sum.detach(), out.nsp_correct)
        else:  # no sentence head: its sums stay 0 and are not logged
            zero = torch.zeros((), device=self.device)
            values = (out.mlm_loss_sum.detach(), out.mlm_correct, out.masked_count, zero, zero)
        self.sums = self.sums + torch.stack([v.float() for v in values])
        self.examples += num_examples

    def end_step(self, grad_norm: torch.Tensor, lr: float, global_tokens: int, global_flops: int = 0) -> None:
        self.grad_norm_sum = self.grad_norm_sum + grad_norm.detach().float()
        self.lr = lr
        self.tokens += global_tokens
        self.flops += global_flops
        self.steps += 1

    def flush(self, step: int, tokens_seen: int, elapsed: float, distributed: bool) -> dict:
        """The window's record (one sync: the sums are read back here), then start a new window."""
        sums = torch.cat([self.sums, torch.tensor([float(self.examples)], device=self.device)])
        if distributed:
            dist.all_reduce(sums)
        values = torch.cat([sums, self.grad_norm_sum.view(1)]).tolist()
        totals = dict(zip(self.DEVICE_SUMS + ("examples",), values))
        grad_norm_sum = values[-1]
        seconds = max(time.perf_counter() - self.started, 1e-9)
        mlm_loss = totals["mlm_loss"] / max(totals["masked"], 1)
        nsp_loss = totals["nsp_loss"] / max(totals["examples"], 1)
        record = {"step": step, "tokens_seen": tokens_seen, "loss": mlm_loss, "mlm_loss": mlm_loss,
                  "mlm_accuracy": totals["mlm_correct"] / max(totals["masked"], 1)}
        if self.sentence_log:  # nsp_loss / nsp_accuracy, or sop_loss / sop_accuracy
            record["loss"] = mlm_loss + nsp_loss
            record[f"{self.sentence_log}_loss"] = nsp_loss
            record[f"{self.sentence_log}_accuracy"] = totals["nsp_correct"] / max(totals["examples"], 1)
        record.update({"lr": self.lr, "grad_norm": grad_norm_sum / max(self.steps, 1),
                       "tokens_per_second": self.tokens / seconds, "elapsed": elapsed})
        utilization = mfu(self.flops, seconds, self.peak, self.world_size) if self.peak is not None else None
        if utilization is not None:
            record["mfu"] = utilization
        record["peak_memory_mb"] = peak_memory_mb(self.device)
        self.reset()
        return record


class ProgressBar:
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
        use = f"mfu {r['mfu']:.1%} " if "mfu" in r else ""
        info = (f"loss {r['loss']:.4f} mlm_acc {r['mlm_accuracy']:.3f} {sentence}{r['tokens_per_second']:,.0f} tok/s "
                f"{use}mem {r['peak_memory_mb']:,.0f} MB")
        if self.interactive:
            self.bar.update(self.task, completed=step, info=info)
        else:
            console.print(f"step {step}/{self.total} {info} lr {r['lr']:.2e}")

    def __exit__(self, *exc):
        if self.enabled and self.interactive:
            self.bar.__exit__(*exc)
