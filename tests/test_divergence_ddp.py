"""Under DDP every rank stops at the same step when one rank's loss goes bad (gloo, two CPU processes)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides
from bertcli.checkpoint import list_checkpoints

WORKER = Path(__file__).with_name("ddp_divergence_worker.py")


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_at_the_same_step(data_dir, tmp_path):
    run = tmp_path / "run"
    # No log record or checkpoint between the bad step and the end: only the polled flag can stop the ranks.
    overrides = tiny_overrides(data_dir, run, "train.max_steps=8", "system.log_interval=100",
                               "system.checkpoint_interval=2", "system.eval_interval=0")
    sets = [a for s in overrides for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(WORKER), "4", *sets], capture_output=True, text=True, timeout=240, env=env)
    out = proc.stdout + proc.stderr
    stops = dict(re.findall(r"rank (\d) stopped at step (\d+) exit 1", out))
    assert set(stops) == {"0", "1"}, out[-3000:]
    assert stops["0"] == stops["1"] == "5", out[-3000:]  # the bad step (index 4) ran; step 5 never did
    assert len(re.findall(r"the loss became nan .* at step 5;", out)) == 2, out[-3000:]
    # the bad update was never applied or saved: the checkpoints are those of steps 2 and 4 only
    assert [c.name for c in list_checkpoints(run)] == ["step-0000002", "step-0000004"]
