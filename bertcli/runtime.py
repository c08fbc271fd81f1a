"""Where and how the model runs: device, precision, and torchrun's process group.

These are *implementation* settings: they change speed and float rounding, never the recipe.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bertcli.config import SystemConfig
from bertcli.errors import UsageError
from bertcli.model import Speed

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.precision in DTYPES:
            return torch.autocast(self.device.type, dtype=DTYPES[self.precision])
        return contextlib.nullcontext()

    def grad_scaler(self):
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda was asked for but no CUDA GPU is visible; use device cpu (or auto)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    if name not in ("auto", "cpu"):
        raise UsageError(f"device {name!r} is not one of auto, cpu, cuda")
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if name not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"precision {name!r} is not one of auto, fp32, bf16, fp16")
    return name


def speed_settings(system: SystemConfig) -> Speed:
    """The model's share of the system settings."""
    return Speed(sparse_last_layer=system.sparse_last_layer, fast_dropout=system.fast_dropout,
                 pad_vocab_multiple=system.pad_vocab_multiple)


def make_runtime(device: str, precision: str, cpu_threads: int = 0) -> Runtime:
    """Join torchrun's process group when launched by it (RANK/WORLD_SIZE set), else run alone."""
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(dev, resolve_precision(precision, dev), rank, world_size, local_rank)


def close(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
