"""Pretraining under faults: kills at random steps and mid-checkpoint, damaged checkpoints, a full disk."""

import json
import random
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from bertcli.checkpoint import list_checkpoints
from bertcli.errors import DataError
from bertcli.train import pretrain
from faultlib import bertcli_process
from conftest import tiny_config, tiny_overrides

pytestmark = pytest.mark.slow  # subprocess faults: kills, signals

STEPS = 9


def sets(data_dir, run, *extra):
    return [a for s in tiny_overrides(data_dir, run, f"train.max_steps={STEPS}", *extra) for a in ("--set", s)]


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """Weights and losses of an uninterrupted run, to compare every faulted run against."""
    run = tmp_path_factory.mktemp("ref") / "run"
    pretrain(tiny_config(data_dir, run, f"train.max_steps={STEPS}", "data.masking=dynamic"), show_progress=False)
    return load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))


def assert_same_weights(run, reference):
    got = load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))
    for k, v in reference.items():
        assert torch.equal(got[k], v), k


def finish(data_dir, run):
    pretrain(tiny_config(data_dir, run, f"train.max_steps={STEPS}", "data.masking=dynamic"), resume="auto",
             show_progress=False)


KILL_IN_SAVE = """
import os, signal, torch
_save, _calls = torch.save, [0]
def _dying_save(obj, f, *a, **k):
    _calls[0] += 1
    if _calls[0] == {at}:
        open(f, "wb").write(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *a, **k)
torch.save = _dying_save
"""


@pytest.mark.parametrize("kill_at_save", [1, 2])
def test_kill_during_checkpoint_write(data_dir, tmp_path, reference, kill_at_save):
    run = tmp_path / "run"
    proc = bertcli_process(["pretrain", *sets(data_dir, run, "data.masking=dynamic", "system.checkpoint_interval=3")],
                           preamble=KILL_IN_SAVE.format(at=kill_at_save))
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    complete = list_checkpoints(run)
    assert len(complete) == kill_at_save - 1  # the half-written one is not taken for a checkpoint
    assert any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
    finish(data_dir, run)
    assert_same_weights(run, reference)
    assert not any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())


def test_kill_at_random_steps_then_resume(data_dir, tmp_path, reference):
    """SIGKILL at three random steps in a row (checkpoint every step), resuming each time."""
    run = tmp_path / "run"
    rng = random.Random(0)
    kills = sorted(rng.sample(range(1, STEPS), 3))
    for i, target in enumerate(kills):
        args = ["pretrain", *sets(data_dir, run, "data.masking=dynamic", "system.checkpoint_interval=1")]
        proc = bertcli_process(args + (["--resume", "auto"] if i else []))
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
            if any(f'"step": {target},' in line for line in lines):
                break
            time.sleep(0.02)
        proc.kill()
        proc.communicate(timeout=60)
    finish(data_dir, run)
    assert_same_weights(run, reference)
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps == list(range(1, STEPS + 1))  # no step logged twice, none missing


def test_damaged_checkpoints_are_detected(data_dir, tmp_path):
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=3"), show_progress=False)
    ckpt = list_checkpoints(run)[-1]
    for name, damage in [("optimizer.pt", "delete"), ("model.safetensors", "flip"), ("trainer_state.json", "truncate")]:
        backup = tmp_path / "backup"
        shutil.copytree(ckpt, backup)
        path = ckpt / name
        if damage == "delete":
            path.unlink()
        elif damage == "flip":
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x55
            path.write_bytes(bytes(data))
        else:
            path.write_bytes(path.read_bytes()[:20])
        with pytest.raises(Exception) as e:
            pretrain(tiny_config(data_dir, run, "train.max_steps=5"), resume=str(ckpt), show_progress=False)
        assert isinstance(e.value, (DataError,)) or "trainer state" in str(e.value), (name, e.value)
        assert name in str(e.value) or "trainer state" in str(e.value)
        shutil.rmtree(ckpt)
        shutil.copytree(backup, ckpt)
        shutil.rmtree(backup)


def test_disk_full_while_checkpointing(data_dir, small_fs):
    fs = small_fs(400)  # room for config and metrics, not for weights + optimizer state
    run = fs / "run"
    with pytest.raises(DataError, match="cannot write checkpoint"):
        pretrain(tiny_config(data_dir, run, "train.max_steps=3"), show_progress=False)
    root = run / "checkpoints"
    assert list_checkpoints(run) == []
    assert not root.exists() or not any(root.iterdir())  # nothing half-written left behind


SIGNAL_AFTER_STEP = """
import os, signal
from bertcli import runlog
_write = runlog.RunLog.write
def _write_then_signal(self, record, prefix=""):
    _write(self, record, prefix)
    if record.get("step") == {at} and "loss" in record:
        for _ in range({times}):
            os.kill(os.getpid(), signal.{name})
runlog.RunLog.write = _write_then_signal
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_stop_signal_checkpoints_at_the_step_boundary_then_resume_is_exact(data_dir, tmp_path, reference, name):
    """Preemption: the signal arrives right after step 4 is logged (sent from inside, no timing)."""
    run = tmp_path / "run"
    proc = bertcli_process(["pretrain", *sets(data_dir, run, "data.masking=dynamic", "system.checkpoint_interval=100")],
                           preamble=SIGNAL_AFTER_STEP.format(at=4, times=1, name=name))
    _, err = proc.communicate(timeout=120)
    signum = getattr(signal, name)
    assert proc.returncode == 128 + signum, err
    assert "interrupted at step 4" in err and "Traceback" not in err
    assert [c.name for c in list_checkpoints(run)] == ["step-0000004"]
    finish(data_dir, run)
    assert_same_weights(run, reference)


def test_second_signal_aborts_without_a_checkpoint(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = bertcli_process(["pretrain", *sets(data_dir, run, "system.checkpoint_interval=100")],
                           preamble=SIGNAL_AFTER_STEP.format(at=2, times=2, name="SIGTERM"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "aborted by a second SIGTERM" in err.strip().splitlines()[-1]
    assert list_checkpoints(run) == []
