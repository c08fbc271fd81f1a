"""FLOP counts against a hand count and torch's own counter, the peak table, MFU and peak memory in records."""

import json
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bertcli.model import BertConfig, BertForPreTraining, Speed
from bertcli.runlog import MetricsWindow
from bertcli.utilization import (Peak, StepCounts, device_peak, encoder_matmul_weights, gpu_peak_tflops,
                                 measure_cpu_tflops, mfu, peak_memory_mb, step_flops)


def small_config(**kw) -> BertConfig:
    values = dict(vocab_size=10, hidden_size=4, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                  max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertConfig(**{**values, **kw})


def test_step_flops_equal_a_hand_count():
    # d=4, one layer, d_ff=8, V=10; two sequences of lengths 3 and 5 (8 real tokens), 2 masked positions.
    # encoder matmul weights: 4·4·4 (Q, K, V, output) + 2·4·8 (feed-forward) = 128 → 6 · 128 · 8 tokens = 6,144
    # attention: 12 · 1 layer · d=4 · (3² + 5²) pairs = 1,632
    # masked-LM head at the 2 masked positions: 6 · (4·4 transform + 4·10 decoder) · 2 = 672
    # pooler + two-way head per example: 6 · (4·4 + 4·2) · 2 = 288
    counts = StepCounts(tokens=8, masked=2, examples=2, attention_pairs=3 * 3 + 5 * 5)
    assert encoder_matmul_weights(small_config()) == 128
    assert step_flops(small_config(), counts, sentence_task=True) == 6144 + 1632 + 672 + 288
    assert step_flops(small_config(), counts, sentence_task=False) == 6144 + 1632 + 672


def test_matmul_flops_equal_torchs_flop_counter():
    """Forward + backward of a real model, every position real and masked: torch counts the same
    matrix-multiply FLOPs (it does not see the CPU's fused attention, which the hand count covers)."""
    c = small_config(vocab_size=50, hidden_size=16, num_hidden_layers=2, intermediate_size=32)
    model = BertForPreTraining(c, Speed(pad_vocab_multiple=1))
    B, T, P = 3, 8, 2
    ids = torch.randint(5, 50, (B, T))
    positions = torch.tensor([[1, 2], [3, 4], [5, 6]])
    with FlopCounterMode(display=False) as counter:
        out = model(ids, torch.zeros_like(ids), None, positions, torch.randint(5, 50, (B, P)), torch.tensor([0, 1, 0]))
        (out.mlm_loss_sum + out.nsp_loss_sum).backward()
    without_attention = StepCounts(tokens=B * T, masked=B * P, examples=B, attention_pairs=0)
    assert counter.get_total_flops() == step_flops(c, without_attention, sentence_task=True)


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.0), ("NVIDIA H100 PCIe", "bf16", 756.0), ("NVIDIA H200", "fp32", 495.0),
    ("NVIDIA A100-SXM4-80GB", "fp16", 312.0), ("NVIDIA L40S", "bf16", 362.0), ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA A10", "fp32", 62.5), ("Tesla T4", "fp16", 65.0), ("Tesla V100-SXM2-16GB", "bf16", None),
    ("Some Future GPU", "bf16", None),
])
def test_known_gpu_peaks(name, precision, peak):
    assert gpu_peak_tflops(name, precision) == peak


def test_peak_override_and_cpu_measurement():
    assert device_peak(torch.device("cpu"), "fp32", 2.5) == Peak(2.5, "system.peak_tflops")
    measured = device_peak(torch.device("cpu"), "fp32", None)
    assert measured.tflops > 0 and "measured" in measured.source
    assert measure_cpu_tflops("fp32", seconds=0.01) > 0
    assert mfu(1e12, 2.0, Peak(1.0, "x")) == 0.5 and mfu(1e12, 2.0, Peak(1.0, "x"), world_size=2) == 0.25
    assert mfu(1e12, 2.0, Peak(None, "unknown")) is None
    assert peak_memory_mb(torch.device("cpu")) > 10  # this process's peak RSS: python and torch at least


def test_log_window_reports_mfu_from_its_flops(monkeypatch):
    clock = iter([100.0, 102.0, 102.0])  # the window starts at 100 s, is flushed at 102 s, and restarts
    monkeypatch.setattr("bertcli.runlog.time", SimpleNamespace(perf_counter=lambda: next(clock)))
    window = MetricsWindow(torch.device("cpu"), "nsp", Peak(1.0, "test"))
    out = BertForPreTraining(small_config())(torch.randint(5, 10, (2, 4)), torch.zeros(2, 4, dtype=torch.long), None,
                                            torch.tensor([[1], [2]]), torch.tensor([[5], [6]]), torch.tensor([0, 1]))
    window.add(out, 2)
    window.end_step(torch.tensor(1.0), 1e-3, global_tokens=8, global_flops=10 ** 12)
    record = window.flush(step=1, tokens_seen=8, elapsed=2.0, distributed=False)
    assert record["mfu"] == pytest.approx(0.5)  # 1e12 FLOPs in 2 s against 1 TFLOP/s
    assert record["peak_memory_mb"] > 0


def test_pretrain_records_carry_mfu_and_peak_memory(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert train and all(r["mfu"] > 0 and r["peak_memory_mb"] > 0 for r in train)
