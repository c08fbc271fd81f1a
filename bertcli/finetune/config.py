"""The fine-tuning recipe: `configs/finetune.yaml`, read by the same machinery as pretrain's config.

`data`, `model` and `train` are the recipe; `system` is the implementation (device, threads,
how dropout masks are drawn) and changes only speed and float rounding. Defaults are BERT's
GLUE recipe (Devlin et al. 2019, appendix A.3: lr in {5e-5, 3e-5, 2e-5}, batch 32, 3 epochs)
with Hugging Face's run_glue warmup and decay (linear warmup over warmup_ratio of the steps,
then linear decay to 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from bertcli.config import _f, load_sectioned_config

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536


@dataclass
class FinetuneDataConfig:
    max_seq_length: int = _f(128, "tokens per example, [CLS] and [SEP]s included; a longer pair is cut longest-first")


@dataclass
class FinetuneModelConfig:
    classifier_dropout: Optional[float] = _f(None, "dropout before the classifier (null: the model's hidden_dropout_prob)")


@dataclass
class FinetuneTrainConfig:
    learning_rate: float = _f(2e-5, "peak learning rate")
    epochs: int = _f(3, "passes over the training split; validation is evaluated after each")
    batch_size: int = _f(32, "examples per optimizer step")
    warmup_ratio: float = _f(0.1, "share of the steps with linear warmup from 0; then linear decay to 0")
    weight_decay: float = _f(0.01, "decoupled weight decay (not on biases and LayerNorm)")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: off)")


@dataclass
class FinetuneSystemConfig:
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "auto (cuda when available), cpu or cuda")
    fast_dropout: bool = _f(True, "CPU: draw dropout masks from numpy's SFC64 (~10x cheaper than torch's "
                                  "bernoulli): same keep probability, other draws")
    cpu_threads: int = _f(0, "intra-op threads on the CPU (0: torch's default, one per core)")
    eval_batch_size: int = _f(128, "examples per batch when evaluating and predicting")


@dataclass
class FinetuneConfig:
    seed: int = _f(42, "seed of the classifier's initialisation, the data order and dropout (each its own stream)")
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    system: FinetuneSystemConfig = field(default_factory=FinetuneSystemConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {"data": FinetuneDataConfig, "model": FinetuneModelConfig, "train": FinetuneTrainConfig,
            "system": FinetuneSystemConfig}


def validate(c: FinetuneConfig) -> list[str]:
    """Out-of-range values, each naming its key."""
    p, t = [], c.train
    if not 0 <= c.seed < 2**32:
        p.append(f"seed {c.seed} must be between 0 and {2**32 - 1}")
    if not 3 <= c.data.max_seq_length <= 65536:
        p.append(f"data.max_seq_length {c.data.max_seq_length} must be between 3 and 65536")
    d = c.model.classifier_dropout
    if d is not None and not 0.0 <= d < 1.0:
        p.append(f"model.classifier_dropout {d} must be in [0, 1) or null")
    if t.learning_rate <= 0 or t.learning_rate > 1:
        p.append(f"train.learning_rate {t.learning_rate} must be in (0, 1]")
    if not 1 <= t.epochs <= MAX_EPOCHS:
        p.append(f"train.epochs {t.epochs} must be between 1 and {MAX_EPOCHS}")
    if not 1 <= t.batch_size <= MAX_BATCH_SIZE:
        p.append(f"train.batch_size {t.batch_size} must be between 1 and {MAX_BATCH_SIZE}")
    if not 0.0 <= t.warmup_ratio <= 1.0:
        p.append(f"train.warmup_ratio {t.warmup_ratio} must be between 0 and 1")
    if not (0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1):
        p.append("train.adam_beta1 and train.adam_beta2 must be in [0, 1)")
    if t.weight_decay < 0 or t.grad_clip < 0 or t.adam_epsilon <= 0:
        p.append("train.weight_decay and train.grad_clip must be >= 0, train.adam_epsilon > 0")
    if not 0 <= c.system.cpu_threads <= 1024:
        p.append("system.cpu_threads must be between 0 (torch's default) and 1024")
    if not 1 <= c.system.eval_batch_size <= MAX_BATCH_SIZE:
        p.append(f"system.eval_batch_size must be between 1 and {MAX_BATCH_SIZE}")
    return p


def load_finetune_config(path: Path | None = None, overrides: list[str] = ()) -> FinetuneConfig:
    """The recipe from YAML (None: the defaults above) with `--set` overrides, validated (UsageError)."""
    return load_sectioned_config(path, overrides, FinetuneConfig, SECTIONS, validate)
