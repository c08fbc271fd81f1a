"""The GPU tier, `pytest -m gpu`: the CUDA paths that CPU runs never take.

Without a CUDA GPU every test here is skipped, with the reason in pytest's summary (-rs).
BERTCLI_GPU_TIER_DEVICE=cpu runs the same tests on the CPU (benchmarks/gpu_check.sh --dry-run
does), which checks the tests themselves; the one check that only means something on CUDA (no
host sync while the divergence guard holds a step) is then skipped with its reason.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertcli.batches import BatchPlan, MicroBatches
from bertcli.checkpoint import list_checkpoints
from bertcli.model import BertConfig, BertForPreTraining
from bertcli.runtime import make_runtime
from bertcli.train import Trainer, pretrain
from conftest import TINY_MODEL, run_cli, tiny_config, tiny_overrides

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "botchan.txt"

DEVICE = os.environ.get("BERTCLI_GPU_TIER_DEVICE", "cuda")
ON_CUDA = DEVICE == "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="GPU tier: no CUDA GPU visible (BERTCLI_GPU_TIER_DEVICE=cpu runs it on the CPU)"),
]
BF16_RTOL = 0.02  # bf16 keeps 8 bits of mantissa: a loss of ~7.6 may move by a few hundredths
COMPILE_RTOL = 1e-4  # the compiler reorders fp32 sums; nothing else may differ


def on_device(data_dir, out_dir, *extra):
    return tiny_config(data_dir, out_dir, f"system.device={DEVICE}", *extra)


def final_weights(run_dir):
    return load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors"))


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def model_and_batch(data_dir):
    """A tiny BERT on the device and one training micro-batch of the fixture data."""
    from bertcli.shards import PretrainingData

    data = PretrainingData([data_dir], "train")
    batch = MicroBatches(data, BatchPlan(np.diff(data.cumulative), 8, 8, 1, seed=1), rank=0, remask_params=None)[0]
    sizes = dict(a.split("=") for a in TINY_MODEL)
    cfg = BertConfig(vocab_size=data.vocab_size, **{k.removeprefix("model."): int(v) for k, v in sizes.items()})
    torch.manual_seed(0)
    return BertForPreTraining(cfg).to(DEVICE), batch.to(torch.device(DEVICE))


def loss_of(model, batch):
    out = model(**batch.model_inputs(batch.is_padded))
    return out.mlm_loss_sum / out.masked_count + out.nsp_loss_sum / len(batch.next_sentence_labels)


def test_bf16_loss_is_within_tolerance_of_fp32(data_dir):
    model, batch = model_and_batch(data_dir)
    model.eval()
    with torch.no_grad():
        fp32 = float(loss_of(model, batch))
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            bf16 = float(loss_of(model, batch))
    assert bf16 == pytest.approx(fp32, rel=BF16_RTOL), (bf16, fp32)


def test_compile_on_and_off_give_the_same_loss_and_gradients(data_dir):
    model, batch = model_and_batch(data_dir)
    model.eval()  # no dropout: the compiled graph draws its own masks
    eager = loss_of(model, batch)
    eager.backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = loss_of(torch.compile(model), batch)
    compiled.backward()
    assert float(compiled) == pytest.approx(float(eager), rel=COMPILE_RTOL)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, eager_grads[name], rtol=1e-3, atol=1e-5), name


def test_resume_is_bit_identical(data_dir, tmp_path):
    """N steps straight = N/2 steps, a checkpoint, --resume, N/2 more: the same weights, bit for bit."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain(on_device(data_dir, straight, "train.max_steps=6", "data.masking=dynamic"), show_progress=False)
    pretrain(on_device(data_dir, resumed, "train.max_steps=6", "data.masking=dynamic", "system.checkpoint_interval=3"),
             show_progress=False)
    for c in list_checkpoints(resumed):
        if c.name != "step-0000003":
            shutil.rmtree(c)
    pretrain(on_device(data_dir, resumed, "train.max_steps=6", "data.masking=dynamic"), resume="auto",
             show_progress=False)
    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert losses(straight) == losses(resumed)


def test_divergence_guard_skips_a_nan_step_without_a_host_sync(data_dir, tmp_path):
    cfg = on_device(data_dir, tmp_path / "run", "train.max_steps=4")
    runtime = make_runtime(cfg.system.device, cfg.system.precision)
    trainer = Trainer(cfg, runtime, show_progress=False)
    trainer.build(None, False)
    try:
        batches = iter(trainer.loader)
        micro = [next(batches) for _ in range(trainer.plan.accumulation)]
        masked, tokens = sum(b.num_masked for b in micro), sum(b.num_tokens for b in micro)
        trainer.train_step(micro, masked, tokens)  # one good step first: the optimizer state exists
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        forward = trainer.model.forward
        trainer.model.forward = lambda *a, **kw: _with_nan_loss(forward(*a, **kw))
        micro = [next(batches) for _ in range(trainer.plan.accumulation)]
        if ON_CUDA:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")  # any host-device sync in the step raises
        try:
            trainer.train_step(micro, masked, tokens)
            known_at_once = trainer.guard.known()
        finally:
            if ON_CUDA:
                torch.cuda.set_sync_debug_mode("default")
        del trainer.model.forward
        if ON_CUDA:
            torch.cuda.synchronize()
        assert not known_at_once or not ON_CUDA  # on CUDA the host learns later, through the event
        after = trainer.model.state_dict()
        for k in before:
            assert torch.equal(before[k], after[k]), f"{k} changed in a step whose loss was NaN"
        assert float(trainer.guard.first_bad[0]) == 2  # the second step, 1-based
        while not trainer.guard.known():  # the event completes: the host knows without having waited
            torch.cuda.synchronize() if ON_CUDA else None
    finally:
        trainer.close()


def _with_nan_loss(out):
    out.mlm_loss_sum = out.mlm_loss_sum + torch.tensor(float("nan"), device=out.mlm_loss_sum.device)
    return out


@pytest.fixture(scope="module")
def device_run(data_dir, tmp_path_factory):
    """A run trained on the device, for eval, predict and export."""
    run = tmp_path_factory.mktemp("gpu") / "run"
    pretrain(on_device(data_dir, run, "train.max_steps=4"), show_progress=False)
    return run


def test_eval_on_the_device_matches_the_cpu(device_run, data_dir):
    results = {}
    for device in (DEVICE, "cpu"):
        proc = run_cli("eval", "--checkpoint", device_run, "--data", data_dir, "--device", device, "--json", check=True)
        results[device] = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("masked_lm_accuracy", "loss"):
        assert results[DEVICE][key] == pytest.approx(results["cpu"][key], rel=1e-4), key


def test_predict_on_the_device_matches_the_cpu(device_run):
    answers = {}
    for device in (DEVICE, "cpu"):
        proc = run_cli("predict", "the [MASK] of the world", "--checkpoint", device_run, "--device", device,
                       "--next", "and then it rained.", "--json", check=True)
        answers[device] = json.loads(proc.stdout.strip().splitlines()[-1])
    for ours, cpu in zip(answers[DEVICE]["masks"], answers["cpu"]["masks"]):
        assert [p["probability"] for p in ours["predictions"]] == \
            pytest.approx([p["probability"] for p in cpu["predictions"]], abs=1e-4)
    assert answers[DEVICE]["is_next_probability"] == pytest.approx(answers["cpu"]["is_next_probability"], abs=1e-4)


def test_export_of_a_device_run_loads_in_transformers(device_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    run_cli("export", "--checkpoint", device_run, "--out", tmp_path / "hf", check=True)
    model = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf").to(DEVICE).eval()
    ids = torch.tensor([[2, 10, 11, 4, 12, 3]], device=DEVICE)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).prediction_logits).all()


def test_torchrun_one_process_per_gpu(data_dir, tmp_path):
    nproc = torch.cuda.device_count() if ON_CUDA else 2
    common = ("train.max_steps=3", "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0")
    pretrain(on_device(data_dir, tmp_path / "one", *common), show_progress=False)
    sets = [a for s in tiny_overrides(data_dir, tmp_path / "all", f"system.device={DEVICE}", *common)
            for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "bertcli", "pretrain", *sets], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "all")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-3), k
    assert losses(tmp_path / "all") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


def test_finetune_on_the_device(device_run, tmp_path):
    """bertcli finetune on the device: it runs, writes results.json, and its validation accuracy is a number."""
    lines = [line.strip().replace("\t", " ") for line in SAMPLE.read_text(encoding="utf-8").splitlines()
             if len(line.split()) > 3][:64]
    rows = ["sentence\tlabel", *(f"{t}\t{'question' if '?' in t else 'statement'}" for t in lines)]
    (tmp_path / "train.tsv").write_text("\n".join(rows[:49]) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("\n".join([rows[0], *rows[49:]]) + "\n", encoding="utf-8")
    run_cli("finetune", "--model", device_run, "--train", tmp_path / "train.tsv", "--validation", tmp_path / "dev.tsv",
            "--text-field", "sentence", "--out", tmp_path / "ft", "--set", "train.epochs=1",
            "--set", "train.batch_size=8", "--set", "data.max_seq_length=48", "--set", f"system.device={DEVICE}",
            check=True)
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["command"] == "finetune"
    [(task, metrics)] = results["tasks"].items()
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if "accuracy" in k), metrics
