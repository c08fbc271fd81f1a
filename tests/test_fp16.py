"""fp16 with dynamic loss scaling, on the CPU: the GradScaler's state is checkpointed and resumed
exactly, and a non-finite loss stops the run as under bf16/fp32 (an overflowing gradient is the
scaler's to skip)."""

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from bertcli.checkpoint import list_checkpoints
from bertcli.errors import DataError
from bertcli.train import Trainer, pretrain
from conftest import tiny_config

FP16 = ("system.precision=fp16", "train.max_steps=4", "system.checkpoint_interval=2")


def weights(run):
    return load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))


@pytest.mark.slow
def test_fp16_checkpoints_the_scaler_and_resumes_exactly(data_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain(tiny_config(data_dir, straight, *FP16), show_progress=False)
    pretrain(tiny_config(data_dir, resumed, *FP16), show_progress=False)
    saved = torch.load(list_checkpoints(resumed)[0] / "scaler.pt", weights_only=True)
    assert saved["scale"] > 0 and {"growth_factor", "backoff_factor", "growth_interval"} <= saved.keys()
    shutil.rmtree(list_checkpoints(resumed)[-1])  # continue from step 2, with the scaler state saved there
    pretrain(tiny_config(data_dir, resumed, *FP16), resume="auto", show_progress=False)
    a, b = weights(straight), weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fp16_non_finite_loss_stops_the_run(data_dir, tmp_path, monkeypatch):
    original = Trainer.train_step

    def nan_at_step_2(self, *args):
        if self.step == 2:
            forward = self.model.forward

            def nan_forward(*a, **kw):
                out = forward(*a, **kw)
                out.mlm_loss_sum = out.mlm_loss_sum + torch.tensor(math.nan)
                return out
            self.model.forward = nan_forward
        try:
            return original(self, *args)
        finally:
            self.model.__dict__.pop("forward", None)

    monkeypatch.setattr(Trainer, "train_step", nan_at_step_2)
    with pytest.raises(DataError, match=r"the loss became nan .* at step 3;.* last good checkpoint is .*step-0000002"):
        pretrain(tiny_config(data_dir, tmp_path / "run", *FP16), show_progress=False)
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step-0000002"]
