"""How much of the machine a run uses: model FLOPs per step, the device's peak, MFU, peak memory.

Model FLOPs are the *useful* work of a training step, counted from numbers the host already has
(real tokens, real masked positions, examples, Σ L² over sequences), so no figure here waits for
the device. Training costs 3× the forward pass (backward = 2× forward), and the forward costs 2
FLOPs per multiply-add:

- the encoder's matrix multiplies: 6·N_enc per real token, N_enc = L·(4d² + 2d·d_ff) weights
  (Q, K, V, output, the two feed-forward matrices; biases, LayerNorm, GELU and softmax are
  elementwise and left out, as in Kaplan et al.'s 6·N);
- attention, QKᵀ and the weighted sum of V: 6·2·d per (query, key) pair of real tokens, i.e.
  12·L·d·Σ L_i² over the sequences of lengths L_i (padding attends to nothing useful);
- the masked-LM head, transform (d²) plus the tied decoder (d·V), only at the real masked
  positions — the sparse head computes nothing else, and nothing else is needed;
- the pooler and the two-way head (d² + 2d) per example, when there is a sentence task.

Not counted: padding, the embedding lookups, the optimizer update. A step that computes more than
this (the last layer at every position, padded positions) does work the model does not need, and
its MFU is lower for it: that is what MFU is for.

The peak is, in this order: `system.peak_tflops` when set; on a GPU, the dense tensor-core peak
of a known card for the run's precision (fp32 runs with TF32 matmuls, see runtime.py); on the CPU,
the matmul rate measured once at start. This module does not time steps; the log window does.
"""

from __future__ import annotations

import re
import resource
import time
from dataclasses import dataclass

import torch

from bertcli.model import BertConfig

# Dense (no sparsity) peak TFLOP/s per card: bf16, fp16, fp32 (as TF32 tensor-core matmuls where the
# card has them, which is how bertcli runs fp32 on CUDA). From the vendors' data sheets; the first
# pattern that matches torch.cuda.get_device_name() wins, so specific names come before general ones.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    (r"\bB200\b", {"bf16": 2250.0, "fp16": 2250.0, "fp32": 1100.0}),
    (r"\bH100\b.*\bPCIe\b", {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0}),
    (r"\bH100\b.*\bNVL\b", {"bf16": 835.0, "fp16": 835.0, "fp32": 418.0}),
    (r"\b(H100|H200|GH200|H800)\b", {"bf16": 989.0, "fp16": 989.0, "fp32": 495.0}),
    (r"\bA100\b|\bA800\b", {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
    (r"\bL40S\b", {"bf16": 362.0, "fp16": 362.0, "fp32": 183.0}),
    (r"\bL40\b", {"bf16": 181.0, "fp16": 181.0, "fp32": 90.5}),
    (r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "fp32": 60.0}),
    (r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "fp32": 62.5}),
    (r"\bV100\b", {"fp16": 125.0, "fp32": 15.7}),  # no bf16 tensor cores
    (r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}),
    (r"\bMI300X\b", {"bf16": 1307.0, "fp16": 1307.0, "fp32": 654.0}),
]

CPU_PROBE_SIZE = 512  # square matmuls of this size: large enough for the BLAS's full rate, ~1 ms each
CPU_PROBE_SECONDS = 0.1


@dataclass(frozen=True)
class StepCounts:
    """What the host knows about one optimizer step's batches (all ranks)."""

    tokens: int  # real (non-padding) tokens
    masked: int  # real masked positions
    examples: int  # sequences
    attention_pairs: int  # Σ L_i² over the sequences: (query, key) pairs of real tokens


def encoder_matmul_weights(c: BertConfig) -> int:
    """N_enc: the weights of the encoder's matrix multiplies (biases and LayerNorm left out). ModernBERT's
    GeGLU feed-forward has three d × d_ff matrices (its input projection is two); its sliding-window
    layers are counted as global ones, so its attention count is an upper bound."""
    d, ff = c.hidden_size, c.intermediate_size
    ff_matrices = 3 if getattr(c, "architecture", "bert") == "modernbert" else 2
    return c.num_hidden_layers * (4 * d * d + ff_matrices * d * ff)


def step_flops(c: BertConfig, counts: StepCounts, sentence_task: bool) -> int:
    """Useful training FLOPs (forward + backward) of one optimizer step; see the module docstring."""
    d = c.hidden_size
    flops = 6 * encoder_matmul_weights(c) * counts.tokens
    flops += 12 * c.num_hidden_layers * d * counts.attention_pairs
    flops += 6 * (d * d + d * c.vocab_size) * counts.masked
    if sentence_task:
        flops += 6 * (d * d + 2 * d) * counts.examples
    return flops


def gpu_peak_tflops(name: str, precision: str) -> float | None:
    """The card's dense peak for `precision` from GPU_PEAK_TFLOPS, or None when it is not listed."""
    for pattern, peaks in GPU_PEAK_TFLOPS:
        if re.search(pattern, name):
            return peaks.get(precision)
    return None


def measure_cpu_tflops(precision: str = "fp32", seconds: float = CPU_PROBE_SECONDS) -> float:
    """The CPU's matmul rate in TFLOP/s, measured now: the best of repeated square matmuls."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = CPU_PROBE_SIZE
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm up the BLAS (thread pool, packing buffers)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / max(best, 1e-9) / 1e12


@dataclass(frozen=True)
class Peak:
    tflops: float | None  # per device; None: unknown (no MFU is reported)
    source: str  # where the figure comes from, for the banner


def device_peak(device: torch.device, precision: str, override: float | None) -> Peak:
    """The peak MFU is measured against, per device."""
    if override is not None:
        return Peak(float(override), "system.peak_tflops")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak_tflops(name, precision)
        if peak is None:
            return Peak(None, f"{name} {precision} is not in bertcli's table; set system.peak_tflops for MFU")
        return Peak(peak, f"{name} {precision} data sheet")
    return Peak(measure_cpu_tflops(precision), f"CPU {precision} matmul rate measured at start")


def mfu(flops: float, seconds: float, peak: Peak, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved useful FLOP/s over the peak of all devices."""
    if peak.tflops is None or seconds <= 0:
        return None
    return flops / seconds / (peak.tflops * 1e12 * world_size)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors held (torch's allocator, read on the host, no sync); CPU: the
    process's peak resident set (ru_maxrss, KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
