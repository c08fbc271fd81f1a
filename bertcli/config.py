"""The pretraining config: YAML into dataclasses, `--set` overrides, validation.

Sections follow cramming's split: `data`, `model` and `train` are the *recipe* (they decide what
is learned); `system` is the *implementation* (device, precision, compile, cadence) and must
only change how fast. Every field carries a one-line help text. All problems are collected and
reported at once, each naming its key. YAML is read with `safe_load` only.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from bertcli.errors import UsageError


def _f(default, help: str):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    dir: typing.Union[str, list] = _f("", "a make-data output directory, or a list of them made with the same tokenizer")
    masking: str = _f("static", "static: the masks make-data wrote; dynamic: re-mask every epoch (RoBERTa)")
    num_workers: int = _f(0, "DataLoader worker processes (0: load in the training process)")


@dataclass
class ModelConfig:
    hidden_size: int = _f(768, "width of every layer")
    num_hidden_layers: int = _f(12, "encoder layers")
    num_attention_heads: int = _f(12, "attention heads per layer (must divide hidden_size)")
    intermediate_size: int = _f(3072, "width of the feed-forward layer")
    max_position_embeddings: int = _f(512, "longest sequence the model can take (>= the data's max_seq_length)")
    type_vocab_size: int = _f(2, "segment types (2: A and B)")
    hidden_dropout_prob: float = _f(0.1, "dropout on embeddings and sublayer outputs")
    attention_probs_dropout_prob: float = _f(0.1, "dropout on attention probabilities")
    hidden_act: str = _f("gelu", "gelu (exact, HF's), gelu_new (tanh approximation, Google's) or relu")
    initializer_range: float = _f(0.02, "std of the normal initialisation of weights")
    layer_norm_eps: float = _f(1e-12, "LayerNorm epsilon")


@dataclass
class TrainConfig:
    global_batch_size: int = _f(256, "sequences per optimizer step, over all ranks and accumulation steps")
    micro_batch_size: int = _f(32, "sequences per forward/backward on one rank; accumulation is derived")
    max_steps: int = _f(1000, "optimizer steps; the schedule decays to zero here")
    max_time: typing.Optional[str] = _f(None, "stop early after this wall-clock time, e.g. 15m or 2h (null: no limit)")
    learning_rate: float = _f(1e-4, "peak learning rate")
    warmup_steps: int = _f(100, "steps of linear warmup from 0")
    schedule: str = _f("linear", "after warmup: linear (to 0), cosine (to 0) or constant")
    weight_decay: float = _f(0.01, "decoupled weight decay (not on biases and LayerNorm)")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-6, "AdamW epsilon")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: off)")
    init_from: typing.Optional[str] = _f(None, "load weights only from a checkpoint or exported directory")


@dataclass
class SystemConfig:
    device: str = _f("auto", "auto (cuda when available), cpu or cuda")
    precision: str = _f("auto", "auto (bf16 on a GPU that has it, else fp32), fp32, bf16 or fp16")
    compile: bool = _f(False, "torch.compile the model")
    sparse_last_layer: bool = _f(False, "compute the last encoder layer only at [CLS] and the masked positions, the only "
                                        "rows the heads read: same model, up to 1/num_hidden_layers less encoder work, "
                                        "other dropout draws")
    fast_dropout: bool = _f(False, "CPU: draw dropout masks from numpy's SFC64, 16 bits an element, ~10x cheaper than "
                                   "torch's bernoulli: same keep probability, other draws")
    pad_vocab_multiple: int = _f(64, "widen the masked-LM decoder matmul to a multiple of this (faster kernels); "
                                     "weights and checkpoints keep the real vocab size. 1: off")
    cpu_threads: int = _f(0, "intra-op threads on the CPU (0: torch's default, one per core)")
    log_interval: int = _f(10, "log metrics every this many steps")
    eval_interval: int = _f(0, "evaluate on the validation split every this many steps (0: only at the end)")
    eval_batches: int = _f(20, "validation batches per evaluation during training (0: all)")
    checkpoint_interval: int = _f(500, "save a checkpoint every this many steps (and always at the end)")
    keep_checkpoints: int = _f(3, "keep this many most recent checkpoints")


@dataclass
class Config:
    out_dir: str = _f("runs/bert", "run directory: config, metrics, checkpoints")
    seed: int = _f(1234, "seed for initialisation, data order, dropout and dynamic masks")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    @property
    def data_dirs(self) -> list[Path]:
        dirs = self.data.dir if isinstance(self.data.dir, list) else [self.data.dir]
        return [Path(d) for d in dirs]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "system": SystemConfig}
CHOICES = {"data.masking": ("static", "dynamic"), "model.hidden_act": ("gelu", "gelu_new", "relu"),
           "train.schedule": ("linear", "cosine", "constant"), "system.device": ("auto", "cpu", "cuda"),
           "system.precision": ("auto", "fp32", "bf16", "fp16")}


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1h30m' or a number of seconds → seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not parts or not any(parts.groups()):
        raise ValueError(text)
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def _type_ok(value, annotation) -> bool:
    hint = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, annotation)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if annotation == "typing.Optional[str]":
        return value is None or isinstance(value, str)
    if annotation == "typing.Union[str, list]":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return True


def _type_name(annotation) -> str:
    return {"typing.Optional[str]": "a string or null", "typing.Union[str, list]": "a path or a list of paths"}.get(
        annotation, f"a {annotation}")


def _unknown(key: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {prefix}{key}{hint}"


def _build(cls, values: dict, prefix: str, problems: list[str]):
    known = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            problems.append(_unknown(str(key), known, prefix))
            continue
        f = next(f for f in fields(cls) if f.name == key)
        if key in SECTIONS and cls is Config:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                problems.append(f"{key} must be a mapping of keys")
                continue
            kwargs[key] = _build(SECTIONS[key], value, f"{key}.", problems)
            continue
        if f.type == "float" and isinstance(value, str):
            # PyYAML reads 1e-4 (no dot) as a string: accept what float() accepts.
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, f.type):
            problems.append(f"{prefix}{key} must be {_type_name(f.type)}, got {value!r}")
            continue
        if f.type == "float" and isinstance(value, int):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{prefix}{key} must be a finite number, got {value}")
            continue
        kwargs[key] = value
    return cls(**kwargs)


def apply_override(raw: dict, assignment: str) -> None:
    """`train.learning_rate=2e-4` → raw['train']['learning_rate'] = 2e-4 (value parsed as YAML)."""
    if "=" not in assignment:
        raise UsageError(f"--set {assignment!r} must look like section.key=value")
    path, _, text = assignment.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    keys = path.strip().split(".")
    node = raw
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def load_config(path: Path | None, overrides: list[str] = ()) -> Config:
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config {path} does not exist; see configs/ for examples")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where else ""
            raise UsageError(f"config {path} is not valid YAML{at}; fix the syntax") from None
        if not isinstance(raw, dict):
            raise UsageError(f"config {path} must be a mapping of sections (data, model, train, system)")
    for assignment in overrides:
        apply_override(raw, assignment)
    problems: list[str] = []
    config = _build(Config, raw, "", problems)
    if not problems:
        problems.extend(validate(config))
    if problems:
        where = f"config {path}" if path else "config"
        raise UsageError(f"{where}: " + "; ".join(problems))
    return config


def validate(c: Config) -> list[str]:
    """Contradictions and out-of-range values, each naming its key."""
    p = []
    for dotted, allowed in CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(c, section), key)
        if value not in allowed:
            p.append(f"{dotted} is {value!r}; choose one of {', '.join(allowed)}")
    if not c.data.dir:
        p.append("data.dir is not set; give a make-data output directory")
    m, t, s = c.model, c.train, c.system
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
        if getattr(m, name) < 1:
            p.append(f"model.{name} must be at least 1")
    if m.num_attention_heads >= 1 and m.hidden_size % m.num_attention_heads:
        p.append(f"model.num_attention_heads ({m.num_attention_heads}) must divide model.hidden_size ({m.hidden_size})")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if not 0.0 <= getattr(m, name) < 1.0:
            p.append(f"model.{name} must be in [0, 1)")
    if t.micro_batch_size < 1 or t.global_batch_size < 1:
        p.append("train.global_batch_size and train.micro_batch_size must be at least 1")
    elif t.global_batch_size % t.micro_batch_size:
        p.append(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of train.micro_batch_size "
                 f"({t.micro_batch_size}) times the number of processes")
    if t.max_steps < 1:
        p.append("train.max_steps must be at least 1")
    if t.warmup_steps < 0 or t.warmup_steps > t.max_steps:
        p.append(f"train.warmup_steps ({t.warmup_steps}) must be between 0 and train.max_steps ({t.max_steps})")
    if t.learning_rate <= 0:
        p.append("train.learning_rate must be positive")
    if t.max_time is not None:
        try:
            parse_duration(t.max_time)
        except ValueError:
            p.append(f"train.max_time {t.max_time!r} is not a duration like 90s, 15m or 2h")
    if not (0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1):
        p.append("train.adam_beta1 and train.adam_beta2 must be in [0, 1)")
    if t.weight_decay < 0 or t.grad_clip < 0 or t.adam_epsilon <= 0:
        p.append("train.weight_decay and train.grad_clip must be >= 0, train.adam_epsilon > 0")
    for name in ("log_interval", "checkpoint_interval", "keep_checkpoints"):
        if getattr(s, name) < 1:
            p.append(f"system.{name} must be at least 1")
    if s.pad_vocab_multiple < 1 or s.cpu_threads < 0:
        p.append("system.pad_vocab_multiple must be at least 1 and system.cpu_threads at least 0")
    if s.eval_interval < 0 or s.eval_batches < 0:
        p.append("system.eval_interval and system.eval_batches must be >= 0")
    if c.data.num_workers < 0:
        p.append("data.num_workers must be >= 0")
    return p
