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
import reprlib
import typing
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import yaml

from bertcli import bounds
from bertcli.errors import UsageError
from bertcli.architectures import ARCHITECTURES, DATA_FIELDS
from bertcli.limits import MASKED_LM_PROB_RANGE, is_int, is_number

# YAML limits: a config is a few dozen keys. Beyond these it is a mistake or an attack (an alias
# bomb expands to gigabytes, deep nesting exhausts the recursion limit), refused before it grows.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_ALIASES = 64
_show = reprlib.Repr()  # bounded repr for error messages: never echo an expanded value in full
_show.maxstring, _show.maxother, _show.maxlevel, _show.maxlist, _show.maxdict = 40, 40, 2, 4, 4


def _f(default, help: str):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    dir: Union[str, list[str]] = _f("", "a make-data output directory, or a list of them made with the same tokenizer")
    masking: Literal["static", "dynamic"] = _f("static", "static: the masks make-data wrote; dynamic: re-mask every epoch (RoBERTa)")
    masked_lm_prob: Optional[float] = _f(None, f"dynamic masking: share of tokens to mask, {MASKED_LM_PROB_RANGE[0]} to {MASKED_LM_PROB_RANGE[1]} "
                                               "(null: the data's --masked-lm-prob)")
    mask_replace_prob: Optional[float] = _f(None, "dynamic masking: share of masked positions that become [MASK] "
                                                  "(null: the data's, 0.8 as BERT)")
    random_replace_prob: Optional[float] = _f(None, "dynamic masking: share that become a random token, the rest "
                                                    "stay (null: the data's, 0.1 as BERT)")
    num_workers: int = _f(0, "DataLoader worker processes (0: load in the training process)")


ARCHITECTURE_HELP = "bert (model.py, BERT as published) or modernbert (modernbert.py; its keys are ModernBertConfig's)"


def _model_section(name: str, config_class: type) -> type:
    """The model section of one architecture: its config class less what the data decides, after `architecture`."""
    hints = typing.get_type_hints(config_class)
    own = [(f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
           for f in fields(config_class) if f.name not in DATA_FIELDS and f.name != "architecture"]
    section = make_dataclass(
        f"{name.title()}ModelConfig" if name != "bert" else "ModelConfig",
        [("architecture", Literal[tuple(ARCHITECTURES)], field(default=name, metadata={"help": ARCHITECTURE_HELP})), *own])
    section.__module__ = __name__
    section.__doc__ = f"The model's architecture: {config_class.__name__}'s fields except vocab_size and pad_token_id."
    return section


# The model section is the architecture's config class less what the data decides: one definition,
# in the model file. `architecture` (default bert) picks which.
MODEL_SECTIONS = {name: _model_section(name, arch.config_class) for name, arch in ARCHITECTURES.items()}
ModelConfig = MODEL_SECTIONS["bert"]


@dataclass
class TrainConfig:
    global_batch_size: int = _f(256, "sequences per optimizer step, over all ranks and accumulation steps")
    micro_batch_size: int = _f(32, "sequences per forward/backward on one rank; accumulation is derived")
    max_steps: int = _f(1000, "optimizer steps; the schedule decays to zero here")
    max_time: Optional[str] = _f(None, "stop early after this wall-clock time, e.g. 15m or 2h (null: no limit)")
    learning_rate: float = _f(1e-4, "peak learning rate")
    warmup_steps: int = _f(100, "steps of linear warmup from 0")
    schedule: Literal["linear", "cosine", "constant"] = _f("linear", "after warmup: linear (to 0), cosine (to 0) or constant")
    weight_decay: float = _f(0.01, "decoupled weight decay (not on biases and LayerNorm)")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-6, "AdamW epsilon")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: off)")
    init_from: Optional[str] = _f(None, "load weights only from a checkpoint or exported directory")


@dataclass
class SystemConfig:
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "auto (cuda when available), cpu or cuda")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f("auto", "auto (bf16 on a GPU that has it, else fp32), fp32, bf16 or fp16")
    compile: bool = _f(False, "torch.compile the model")
    sparse_last_layer: bool = _f(True, "compute the last encoder layer only at [CLS] and the masked positions, the only "
                                       "rows the heads read: same model, up to 1/num_hidden_layers less encoder work, "
                                       "other dropout draws (false: the draws of the full layer)")
    fast_dropout: bool = _f(True, "CPU: draw dropout masks from numpy's SFC64, 16 bits an element, ~10x cheaper than "
                                  "torch's bernoulli: same keep probability, other draws (false: torch's draws)")
    pad_vocab_multiple: int = _f(64, "widen the masked-LM decoder matmul to a multiple of this (faster kernels); "
                                     "weights and checkpoints keep the real vocab size. 1: off")
    cpu_threads: int = _f(0, "intra-op threads on the CPU (0: torch's default, one per core)")
    peak_tflops: Optional[float] = _f(None, "one device's peak TFLOP/s that MFU is measured against (null: a known GPU's "
                                         "data-sheet peak for the precision, or the CPU's matmul rate measured at start)")
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
    model: Union[tuple(MODEL_SECTIONS.values())] = field(default_factory=ModelConfig)
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


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1h30m' or a number of seconds → seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not parts or not any(parts.groups()):
        raise ValueError(text)
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def _type_ok(value, hint) -> bool:
    """Whether a YAML value fits a field's type hint (int, float, bool, str, Literal, Optional, Union, list[X])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is Union:
        return any(_type_ok(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    raise TypeError(f"config field type {hint} is not handled")  # a bug in this file, not a user error


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(args)
    if origin is Union:
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}[hint]


def _unknown(key: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {prefix}{key}{hint}"


def _build(cls, values: dict, prefix: str, problems: list[str], sections: dict | None = None):
    """`cls` from a YAML mapping; `sections`: the fields of the root that are sections (dataclasses)."""
    known = [f.name for f in fields(cls)]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            problems.append(_unknown(str(key)[:60], known, prefix))
            continue
        if sections and key in sections:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                problems.append(f"{key} must be a mapping of keys")
                continue
            section = sections[key]
            if section is ModelConfig:  # the architecture picks the model section's keys
                section = MODEL_SECTIONS.get(value.get("architecture", "bert"), ModelConfig)  # a bad name: _build says so
            kwargs[key] = _build(section, value, f"{key}.", problems)
            continue
        hint = hints[key]
        numeric = hint is float or (hint == Optional[float] and value is not None)
        if numeric and isinstance(value, str):
            # PyYAML reads 1e-4 (no dot) as a string: accept what float() accepts.
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, hint):
            problems.append(f"{prefix}{key} must be {_type_name(hint)}, got {_show.repr(value)}")
            continue
        if numeric:
            value = float(value)
            if not math.isfinite(value):
                problems.append(f"{prefix}{key} must be a finite number, got {value}")
                continue
        kwargs[key] = value
    return cls(**kwargs)


class _TooComplex(yaml.YAMLError):
    pass


class _LimitedLoader(yaml.SafeLoader):
    """safe_load with a depth and an alias limit, checked while the document is composed."""

    def compose_node(self, parent, index):
        self.depth = getattr(self, "depth", 0) + 1
        if self.depth > MAX_DEPTH:
            raise _TooComplex(f"nests deeper than {MAX_DEPTH} levels")
        if self.check_event(yaml.AliasEvent):
            self.aliases = getattr(self, "aliases", 0) + 1
            if self.aliases > MAX_ALIASES:
                raise _TooComplex(f"uses more than {MAX_ALIASES} aliases")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _safe_load(text: str):
    return yaml.load(text, Loader=_LimitedLoader)


def apply_override(raw: dict, assignment: str) -> None:
    """`train.learning_rate=2e-4` → raw['train']['learning_rate'] = 2e-4 (value parsed as YAML)."""
    if "=" not in assignment:
        raise UsageError(f"--set {assignment!r} must look like section.key=value")
    path, _, text = assignment.partition("=")
    if len(text) > MAX_CONFIG_BYTES:
        raise UsageError(f"--set {path.strip()[:60]}: the value is longer than {MAX_CONFIG_BYTES} bytes")
    try:
        value = _safe_load(text) if text.strip() else ""
    except _TooComplex as e:
        raise UsageError(f"--set {path.strip()[:60]}: the value {e}; give a plain value") from None
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
    """The pretraining config: `path` (YAML) with `overrides` (`--set` assignments) applied, validated."""
    return load_sectioned_config(path, overrides, Config, SECTIONS, validate)


def load_sectioned_config(path: Path | None, overrides, root: type, sections: dict, validate_fn):
    """A config of `root` (a dataclass whose `sections` fields are dataclasses) from YAML and `--set`s:
    every problem collected, each naming its key, then `validate_fn(config)`'s. Shared by pretrain and finetune."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config {path} does not exist; see configs/ for examples")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"config {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few dozen keys")
        try:
            raw = _safe_load(path.read_text(encoding="utf-8")) or {}
        except _TooComplex as e:
            raise UsageError(f"config {path} {e}; a config needs neither — write the values out") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where else ""
            raise UsageError(f"config {path} is not valid YAML{at}; fix the syntax") from None
        if not isinstance(raw, dict):
            raise UsageError(f"config {path} must be a mapping of sections ({', '.join(sections)})")
    for assignment in overrides:
        apply_override(raw, assignment)
    problems: list[str] = []
    config = _build(root, raw, "", problems, sections)  # a value of the wrong type is reported and left at its
    problems.extend(validate_fn(config))  # default, so that the contradictions among the others are reported too
    if problems:
        where = f"config {path}" if path else "config"
        raise UsageError(f"{where}: " + "; ".join(problems))
    return config


def validate(c: Config) -> list[str]:
    """Contradictions and out-of-range values, each naming its key."""
    p = []
    if not c.data.dir:
        p.append("data.dir is not set; give a make-data output directory")
    m, t, s = c.model, c.train, c.system
    p.extend(f"model.{problem}" for problem in ARCHITECTURES[m.architecture].config_problems(asdict(m)))
    p.extend(bounds.config_problems(c))
    if t.micro_batch_size >= 1 and t.global_batch_size % t.micro_batch_size:
        p.append(f"train.global_batch_size ({t.global_batch_size}) must be a multiple of train.micro_batch_size "
                 f"({t.micro_batch_size}) times the number of processes")
    if t.warmup_steps > t.max_steps:
        p.append(f"train.warmup_steps ({t.warmup_steps}) must be between 0 and train.max_steps ({t.max_steps})")
    if t.max_time is not None:
        try:
            parse_duration(t.max_time)
        except ValueError:
            p.append(f"train.max_time {_show.repr(t.max_time)} is not a duration like 90s, 15m or 2h")
    if isinstance(c.out_dir, str) and c.out_dir:
        try:
            bounds.check_out_name("out_dir", c.out_dir)
        except UsageError as e:
            p.append(str(e))
    if t.init_from is not None and not t.init_from.strip():
        p.append("train.init_from is empty; give a checkpoint, run or model directory, or null for a fresh model")
    p.extend(_data_dir_problems(c.data.dir))
    p.extend(_masking_problems(c.data))
    return p


def _data_dir_problems(given) -> list[str]:
    """data.dir: no empty entry, and no directory twice (its shards would be trained on twice)."""
    dirs = given if isinstance(given, list) else [given]
    if len(dirs) > 1 and any(not str(d).strip() for d in dirs):
        return ["data.dir lists an empty entry; give make-data output directories"]
    seen: dict[Path, str] = {}
    for d in dirs:
        if not str(d).strip():
            continue
        resolved = Path(d).resolve()
        if resolved in seen:
            return [f"data.dir lists {_show.repr(seen[resolved])} and {_show.repr(d)}, the same directory; "
                    "list each directory once"]
        seen[resolved] = d
    return []


def _masking_problems(d: DataConfig) -> list[str]:
    """The dynamic-masking keys: in range, and only with data.masking dynamic (static masks are make-data's)."""
    p = []
    keys = {k: getattr(d, k) for k in ("masked_lm_prob", "mask_replace_prob", "random_replace_prob")}
    given = [k for k, v in keys.items() if v is not None]
    if given and d.masking != "dynamic":
        p.append(f"data.{given[0]} applies to data.masking: dynamic only (static masks are the ones make-data wrote); "
                 "set data.masking: dynamic or drop it")
    split = [v for v in (d.mask_replace_prob, d.random_replace_prob) if v is not None]
    if sum(split) > 1.0 + 1e-9:
        p.append("data.mask_replace_prob and data.random_replace_prob must be in [0, 1] and add up to at most 1")
    return p
