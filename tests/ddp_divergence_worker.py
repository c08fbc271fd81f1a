"""One rank of the DDP stop test (test_divergence_ddp.py), started by torch.distributed.run.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_divergence_worker.py BAD_STEP --set ...

Runs `bertcli pretrain` with two changes, both on one rank only:
- rank 1's loss at step BAD_STEP is NaN (a NaN constant added, so its gradients stay finite and
  rank 0's own loss and gradient norm stay finite: rank 0 can only learn of the bad step from rank 1);
- rank 0 learns of a bad step from its host copy one poll late, as a CUDA event that completes
  later on one GPU than on another would make it.
Prints "rank R stopped at step S exit C" so that the test can compare where the ranks stopped.
"""

import math
import os
import sys

import torch

from bertcli import train as train_module
from bertcli.cli import main
from bertcli.divergence import DivergenceGuard

RANK = int(os.environ["RANK"])
BAD_STEP = int(sys.argv[1])  # 0-based step index whose loss rank 1 makes NaN
trainers = []

original_fit, original_step, original_known = train_module.Trainer.fit, train_module.Trainer.train_step, DivergenceGuard.known


def fit(self):
    trainers.append(self)
    return original_fit(self)


def train_step(self, *args):
    if RANK != 1 or self.step != BAD_STEP:
        return original_step(self, *args)
    forward = self.model.forward

    def nan_forward(*a, **kw):
        out = forward(*a, **kw)
        out.mlm_loss_sum = out.mlm_loss_sum + torch.tensor(math.nan)  # gradients stay finite
        return out

    self.model.forward = nan_forward
    try:
        return original_step(self, *args)
    finally:
        del self.model.forward


def late_known(self):
    known, self._late = getattr(self, "_late", False), original_known(self)
    return known


train_module.Trainer.fit, train_module.Trainer.train_step = fit, train_step
if RANK == 0:
    DivergenceGuard.known = late_known

code = 0
try:
    main(["pretrain", *sys.argv[2:]])
except SystemExit as e:
    code = e.code
print(f"rank {RANK} stopped at step {trainers[0].step if trainers else None} exit {code}", flush=True)
sys.exit(code)
