import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from bertcli.checkpoint import list_checkpoints
from bertcli.config import TrainConfig
from bertcli.errors import DataError, UsageError
from bertcli.train import get_lr, pretrain
from conftest import REPO, run_cli, tiny_config, tiny_overrides

GOLDEN = REPO / "tests" / "golden" / "tiny_loss_curve.json"
METRIC_KEYS = {"step", "tokens_seen", "loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "lr",
               "grad_norm", "tokens_per_second", "elapsed"}


def train_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def final_weights(run_dir):
    return load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors"))


def test_lr_schedule_known_values():
    t = TrainConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, schedule="linear")
    assert get_lr(0, t) == pytest.approx(0.1) and get_lr(9, t) == pytest.approx(1.0)
    assert get_lr(60, t) == pytest.approx(0.5) and get_lr(110, t) == 0.0
    t.schedule = "cosine"
    assert get_lr(60, t) == pytest.approx(0.5) and get_lr(10, t) == pytest.approx(1.0)
    t.schedule = "constant"
    assert get_lr(100, t) == 1.0


def test_pretrain_end_to_end_artifacts_and_falling_loss(data_dir, tmp_path):
    run = tmp_path / "run"
    summary = pretrain(tiny_config(data_dir, run, "train.max_steps=12", "system.eval_interval=6",
                                   "system.keep_checkpoints=2"), show_progress=False)
    assert summary["step"] == 12
    records = train_records(run)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert METRIC_KEYS <= set(records[0])
    assert sum(r["loss"] for r in records[-3:]) < sum(r["loss"] for r in records[:3])
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if "eval/loss" in l]
    assert [e["step"] for e in evals] == [6, 12]
    assert (run / "config.yaml").is_file()
    ckpts = list_checkpoints(run)
    assert [c.name for c in ckpts] == ["step-0000009", "step-0000012"]  # every 3 steps, the last 2 kept
    for name in ("model.safetensors", "optimizer.pt", "trainer_state.json", "config.yaml"):
        assert (ckpts[-1] / name).is_file()
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["tokens_seen"] == records[-1]["tokens_seen"]
    assert "bert.encoder.layer.1.attention.self.query.weight" in final_weights(run)


def test_resume_is_exact(data_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain(tiny_config(data_dir, straight, "train.max_steps=6", "data.masking=dynamic"), show_progress=False)
    pretrain(tiny_config(data_dir, resumed, "train.max_steps=6", "data.masking=dynamic", "system.checkpoint_interval=3"),
             show_progress=False)
    # Throw away the end of the second run and continue it from its step-3 checkpoint.
    ckpts = list_checkpoints(resumed)
    for c in ckpts:
        if c.name != "step-0000003":
            import shutil
            shutil.rmtree(c)
    pretrain(tiny_config(data_dir, resumed, "train.max_steps=6", "data.masking=dynamic"), resume="auto", show_progress=False)
    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in train_records(straight)] == [r["loss"] for r in train_records(resumed)]


def test_golden_loss_curve(data_dir, tmp_path):
    """The first steps of a fixed tiny run; a change that alters training shows up here."""
    # The dropout draws of the curve's time: the speed settings that draw other masks (defaults since) are off.
    pretrain(tiny_config(data_dir, tmp_path / "run", "train.max_steps=8", "system.sparse_last_layer=false",
                         "system.fast_dropout=false"), show_progress=False)
    losses = [r["loss"] for r in train_records(tmp_path / "run")]
    if os.environ.get("BERTCLI_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"losses": losses}, indent=1) + "\n")
        pytest.fail(f"golden updated, rerun without BERTCLI_UPDATE_GOLDEN: {GOLDEN} now holds this run's curve")
    expected = json.loads(GOLDEN.read_text())["losses"]
    assert losses == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_init_from_checkpoint_loads_weights_only(data_dir, tmp_path):
    pretrain(tiny_config(data_dir, tmp_path / "a", "train.max_steps=3"), show_progress=False)
    cfg = tiny_config(data_dir, tmp_path / "b", "train.max_steps=1", "train.warmup_steps=0", "train.learning_rate=1e-12",
                      f"train.init_from={tmp_path / 'a'}", "model.hidden_dropout_prob=0.0")
    pretrain(cfg, show_progress=False)
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert torch.allclose(a["bert.pooler.dense.weight"], b["bert.pooler.dense.weight"], atol=1e-6)
    assert json.loads((list_checkpoints(tmp_path / "b")[-1] / "trainer_state.json").read_text())["step"] == 1


@pytest.mark.slow  # DDP: two processes through torchrun
def test_two_process_ddp_matches_one_process(data_dir, tmp_path):
    common = ("train.max_steps=3", "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0")
    pretrain(tiny_config(data_dir, tmp_path / "one", *common), show_progress=False)
    sets = [a for s in tiny_overrides(data_dir, tmp_path / "two", *common) for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "bertcli", "pretrain", *sets], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    la = [r["loss"] for r in train_records(tmp_path / "one")]
    lb = [r["loss"] for r in train_records(tmp_path / "two")]
    assert lb == pytest.approx(la, rel=1e-5)


def test_non_finite_loss_stops_with_message(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path / "run", "train.max_steps=40", "train.learning_rate=1e30",
                      "train.warmup_steps=0", "train.grad_clip=0")
    with pytest.raises(DataError, match="the loss became"):
        pretrain(cfg, show_progress=False)


def test_refuses_to_mix_runs_and_checks_resume_shape(data_dir, tmp_path):
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=3"), show_progress=False)
    with pytest.raises(UsageError, match="holds another run"):
        pretrain(tiny_config(data_dir, run, "train.max_steps=3"), show_progress=False)
    with pytest.raises(UsageError, match="different hidden_size"):
        pretrain(tiny_config(data_dir, run, "train.max_steps=6", "model.hidden_size=64", "model.intermediate_size=64"),
                 resume="auto", show_progress=False)
    pretrain(tiny_config(data_dir, run, "train.max_steps=2"), overwrite=True, show_progress=False)
    assert [c.name for c in list_checkpoints(run)] == ["step-0000002"]


def test_bad_data_inputs(data_dir, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        pretrain(tiny_config(tmp_path / "missing", tmp_path / "r1"), show_progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a make-data output"):
        pretrain(tiny_config(tmp_path / "empty", tmp_path / "r2"), show_progress=False)
    with pytest.raises(UsageError, match="max_position_embeddings"):
        pretrain(tiny_config(data_dir, tmp_path / "r3", "model.max_position_embeddings=32"), show_progress=False)


@pytest.mark.slow  # bertcli subprocesses
def test_cli_errors_are_one_line(data_dir, tmp_path):
    missing = run_cli("pretrain", "--config", tmp_path / "none.yaml")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad_data = run_cli("pretrain", *[a for s in tiny_overrides(tmp_path / "nodata", tmp_path / "r") for a in ("--set", s)])
    assert bad_data.returncode == 2 and "nodata" in bad_data.stderr and "Traceback" not in bad_data.stderr


@pytest.mark.slow  # a subprocess fault: Ctrl-C
def test_ctrl_c_writes_checkpoint_and_exits_130(data_dir, tmp_path):
    run = tmp_path / "run"
    sets = [a for s in tiny_overrides(data_dir, run, "train.max_steps=100000", "system.checkpoint_interval=100000")
            for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "bertcli", "pretrain", *sets], stderr=subprocess.PIPE, text=True)
    # Signal once a step has been logged (training is under way, the handlers are set), not after a guessed delay.
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not (
            metrics.is_file() and '"loss"' in metrics.read_text()):
        time.sleep(0.02)
    assert proc.poll() is None, "pretrain ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    ckpts = list_checkpoints(run)
    assert ckpts, "no checkpoint written on Ctrl-C"
    step = json.loads((ckpts[-1] / "trainer_state.json").read_text())["step"]
    assert step >= 1
    pretrain(tiny_config(data_dir, run, f"train.max_steps={step + 1}"), resume="auto", show_progress=False)
    assert list_checkpoints(run)[-1].name == f"step-{step + 1:07d}"


CONVERSIONS = ("item", "__float__", "__int__", "__bool__", "tolist", "__index__")


def count_host_reads(monkeypatch) -> list[int]:
    """Count reads of a tensor's value on the host: on a GPU each one is a host–device sync."""
    count = [0]
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            count[0] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_steps_between_log_records_read_nothing_back(data_dir, tmp_path, monkeypatch, precision):
    """A step keeps loss, accuracy, gradient norm and the non-finite flag on the device: 2 steps and
    8 steps with one log record at the end read tensors back the same number of times."""
    counts = []
    for steps in (2, 8):
        count = count_host_reads(monkeypatch)
        pretrain(tiny_config(data_dir, tmp_path / f"run{steps}", f"train.max_steps={steps}", "system.log_interval=100",
                             "system.checkpoint_interval=100", f"system.precision={precision}", "system.eval_batches=1"),
                 show_progress=False)
        counts.append(count[0])
        monkeypatch.undo()
    assert counts[0] == counts[1], counts


def build_trainer(data_dir, run, *extra):
    from bertcli.runtime import make_runtime
    from bertcli.train import Trainer
    trainer = Trainer(tiny_config(data_dir, run, *extra), make_runtime("cpu", "fp32"), show_progress=False)
    trainer.build(None, False)
    return trainer


@pytest.mark.parametrize("fault", ["grad", "loss"])
def test_non_finite_step_is_never_applied_or_saved(data_dir, tmp_path, fault):
    """A NaN gradient (finite loss) or an infinite loss (finite gradients) at step 3: the update is
    skipped, nothing after step 2 is written, and the error names step 2's checkpoint."""
    run = tmp_path / "run"
    trainer = build_trainer(data_dir, run, "train.max_steps=6", "system.checkpoint_interval=1",
                            "system.keep_checkpoints=1", "system.log_interval=2")
    bad_step = 2  # 0-based: the third step
    if fault == "grad":
        weight = trainer.model.bert.pooler.dense.weight
        weight.register_hook(lambda g: g * float("nan") if trainer.step == bad_step else g)
    else:
        def poison(module, inputs, out):
            if trainer.step == bad_step:
                out.nsp_loss_sum = out.nsp_loss_sum + torch.tensor(float("inf"))  # d/dx of a constant: grads stay finite
            return out
        trainer.model.register_forward_hook(poison)
    with pytest.raises(DataError, match=r"at step 3;.*last good checkpoint is \S*step-0000002"):
        trainer.fit()
    assert [c.name for c in list_checkpoints(run)] == ["step-0000002"]
    saved = final_weights(run)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, saved[k]), k  # the bad update never reached the weights
    steps = [r["step"] for r in train_records(run)]
    assert max(steps) <= 2  # nothing logged past the good steps


def test_non_finite_weights_are_never_written(trained_run, tmp_path):
    import shutil
    from bertcli.checkpoint import save_checkpoint
    from bertcli.model import BertConfig, BertForPreTraining
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = [c.name for c in list_checkpoints(run)]
    state = json.loads((list_checkpoints(run)[-1] / "trainer_state.json").read_text())
    model = BertForPreTraining(BertConfig(**state["model_config"]))
    with torch.no_grad():
        model.cls.seq_relationship.bias.fill_(float("inf"))
    with pytest.raises(DataError, match="not finite; the last good checkpoint is .*step-0000004"):
        save_checkpoint(run, 99, model, torch.optim.AdamW(model.parameters()), None, {"step": 99}, "", keep=1)
    assert [c.name for c in list_checkpoints(run)] == before


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "nan", "1e999"])
def test_non_finite_config_numbers_are_config_errors(data_dir, tmp_path, value):
    with pytest.raises(UsageError, match="train.learning_rate must be a finite number"):
        tiny_config(data_dir, tmp_path / "run", f"train.learning_rate={value}")


def files_of(*dirs) -> dict:
    return {p: p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def test_overwrite_replaces_only_a_run_bertcli_made(data_dir, tmp_path):
    mine = tmp_path / "mine"  # a user's directory that merely looks like a run
    mine.mkdir()
    for name, text in [("config.yaml", "my notes"), ("metrics.jsonl", "{}\n"), ("notes.txt", "keep me")]:
        (mine / name).write_text(text)
    (mine / "checkpoints").mkdir()
    before = files_of(mine)
    with pytest.raises(UsageError, match="was not made by bertcli"):
        pretrain(tiny_config(data_dir, mine, "train.max_steps=2"), overwrite=True, show_progress=False)
    assert files_of(mine) == before


def test_overwrite_keeps_a_run_that_holds_a_file_the_user_added(data_dir, tmp_path):
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=2"), show_progress=False)
    (run / "notes.txt").write_text("mine")
    before = files_of(run)
    with pytest.raises(UsageError, match="also holds 'notes.txt', which bertcli did not write"):
        pretrain(tiny_config(data_dir, run, "train.max_steps=2"), overwrite=True, show_progress=False)
    assert files_of(run) == before
    (run / "notes.txt").unlink()
    pretrain(tiny_config(data_dir, run, "train.max_steps=2"), overwrite=True, show_progress=False)  # ours alone: replaced


def test_overwrite_validates_everything_before_deleting(data_dir, trained_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = files_of(run)
    for bad in (f"train.init_from={tmp_path / 'typo'}", f"data.dir={tmp_path / 'nodata'}"):
        with pytest.raises(UsageError):
            pretrain(tiny_config(data_dir, run, "train.max_steps=2", bad), overwrite=True, show_progress=False)
        assert files_of(run) == before


@pytest.mark.parametrize("where", ["data", "parent_of_data", "init_from"])
def test_out_dir_may_not_hold_an_input(data_dir, trained_run, tmp_path, where):
    import shutil
    data = tmp_path / "d" / "data"
    shutil.copytree(data_dir, data)
    extra, out = [], {"data": data, "parent_of_data": data.parent, "init_from": trained_run}[where]
    if where == "init_from":
        extra = [f"train.init_from={trained_run}"]
    before = files_of(data, trained_run)
    with pytest.raises(UsageError, match="out_dir"):
        pretrain(tiny_config(data, out, "train.max_steps=2", *extra), overwrite=True, show_progress=False)
    assert files_of(data, trained_run) == before


def test_resume_from_another_runs_checkpoint_needs_an_empty_out_dir(data_dir, trained_run, tmp_path):
    import shutil
    other = tmp_path / "other"
    pretrain(tiny_config(data_dir, other, "train.max_steps=2"), show_progress=False)
    before = files_of(other)
    ckpt = list_checkpoints(trained_run)[-1]
    with pytest.raises(UsageError, match="holds another run"):
        pretrain(tiny_config(data_dir, other, "train.max_steps=5"), resume=str(ckpt), show_progress=False)
    assert files_of(other) == before
    fresh = tmp_path / "fresh"
    pretrain(tiny_config(data_dir, fresh, "train.max_steps=5"), resume=str(ckpt), show_progress=False)
    assert [c.name for c in list_checkpoints(fresh)] == ["step-0000005"]
    assert json.loads((fresh / ".bertcli-owner.json").read_text())["kind"] == "run"
    shutil.rmtree(fresh)


def test_a_second_writer_is_refused_naming_the_holder(data_dir, tmp_path):
    from bertcli.fsutil import BusyError, DirLock
    run = tmp_path / "run"
    with DirLock(run, "out_dir"):
        with pytest.raises(BusyError, match=r"is being written by pid \d+"):
            pretrain(tiny_config(data_dir, run, "train.max_steps=2"), show_progress=False)
    assert not run.exists()
