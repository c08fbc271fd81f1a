"""Divergence guard: a step whose loss or gradient norm is not finite is never applied or saved.

The check runs on the device, so it costs no host–device sync: every step computes one flag
(torch.isfinite of the loss and of the gradient norm) and hands it to the fused AdamW as its
`found_inf` tensor, the same hook GradScaler uses, so the kernel skips the update (parameters,
moments and step counters stay as they were). The flag is sticky: once a step went bad, every
later update is skipped too, so the weights in memory are always those after the last good step.

The host learns of it lazily (`known`, which never waits for the GPU; under DDP the trainer
sums it over ranks in the step's one all-reduce of host counts, so all ranks stop at the same
step) and for certain before anything is written (`check`, called before every checkpoint,
log record and evaluation), then stops with one line naming the step and the last checkpoint
with finite weights.

Under fp16 an infinite gradient norm is the GradScaler's business (it skips the step and lowers
the scale, as dynamic loss scaling intends); only a non-finite loss counts as divergence there.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from bertcli.checkpoint import last_finite_checkpoint
from bertcli.errors import DataError


class DivergenceGuard:
    def __init__(self, device: torch.device, fp16: bool, distributed: bool, run_dir: Path):
        self.device, self.fp16, self.distributed, self.run_dir = device, fp16, distributed, run_dir
        self.skip = torch.zeros((), dtype=torch.float32, device=device)  # 1.0 once any step went bad
        self.first_bad = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)  # step, loss, grad norm
        self._host = self._event = None
        if device.type == "cuda":
            self._host = torch.empty(3, dtype=torch.float64, pin_memory=True)

    def gate(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, optimizer, scaler) -> None:
        """Record this step's health and make the coming optimizer step conditional on it (no sync)."""
        loss = loss.detach()
        if self.distributed:
            # Each rank's loss is normalised by the global counts, so their sum is the step's loss; a
            # NaN or inf on any rank carries into it, and every rank then skips together.
            loss = loss.clone()
            dist.all_reduce(loss)
        bad = ~torch.isfinite(loss)
        if not self.fp16:
            bad = bad | ~torch.isfinite(grad_norm)  # the norm of gradients DDP has already averaged
        bad = bad.float()
        newly = (bad > 0) & (self.skip == 0)
        now = torch.stack([torch.full((), float(step + 1), dtype=torch.float64, device=self.device),
                           loss.double(), grad_norm.detach().double()])
        self.first_bad = torch.where(newly, now, self.first_bad)
        self.skip = torch.maximum(self.skip, bad)
        if scaler.is_enabled():
            # GradScaler sets the fused optimizer's found_inf from its own overflow check; fold ours in.
            for found in scaler._found_inf_per_device(optimizer).values():
                found.copy_(torch.maximum(found, self.skip.to(found.device)))
        else:
            optimizer.found_inf = self.skip

    def known(self) -> bool:
        """Whether this process has already seen a bad step, without waiting for the device.

        On CUDA the flag reaches the host through a pinned copy and an event, so each rank learns
        of a bad step when its own event completes, which may be a step later than another rank.
        The trainer therefore never stops on this alone: it folds it into the step's one all-reduce
        of host counts, so that every rank stops at the same step (a rank that stopped on its own
        would leave the others waiting in the next collective).
        """
        if self._host is None:  # CPU: the flag is host memory; a zero-copy numpy view reads it (CPU tensors only)
            return self.first_bad.numpy()[0] >= 0
        if self._event is not None and self._event.query():
            if self._host[0] >= 0:
                return True
            self._event = None
        if self._event is None:  # copy the current flag for a later call to read
            self._host.copy_(self.first_bad, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        return False

    def check(self) -> None:
        """Stop if any step so far went bad (one sync; called before anything is written)."""
        self._raise_if_bad(self.first_bad.tolist())

    def _raise_if_bad(self, first_bad: list[float]) -> None:
        step, loss, grad_norm = first_bad
        if step < 0:
            return
        last = last_finite_checkpoint(self.run_dir)
        raise DataError(f"the loss became {loss} (gradient norm {grad_norm}) at step {int(step)}; the step was not "
                        f"applied and nothing after it was saved. The last good checkpoint is {last or 'none'}: lower "
                        "train.learning_rate or use bf16/fp32, then --resume it")
