"""The documented range of every numeric option and config key, checked before any work.

One table per command (`OPTIONS`) and one for the pretraining config (`CONFIG`), so that the
docs list exactly what the code checks (docs/bounds.md is tested against it). A value out of
range is a one-line usage error (exit 2) naming the option and its range; NaN is never in range.
The bounds are far beyond any real run and well inside what the libraries behind the options
take: SentencePiece and tokenizers abort (SIGABRT) on a vocabulary of 2**31, torch crashes on
100,000 intra-op threads, numpy seeds are 32-bit, and a process count must not exceed what a
machine can start.

Relations between values (warmup within max_steps, global batch a multiple of the micro batch,
max_predictions within max_seq_length) are the owning options' checks, not this table's.

Also here: the check of an output name, which reaches the filesystem as it is (the text
encoding's is readers/streams.check_encoding).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.limits import MASKED_LM_PROB_RANGE, MAX_SEQ_LENGTH

SEED_MAX = 2**32 - 1  # numpy's and SentencePiece's seeds are 32-bit
MAX_WORKERS = 256  # processes: beyond any machine bertcli targets, far below what exhausts a process table
MAX_THREADS = 256
MAX_VOCAB = 1 << 20  # four times the largest vocabulary of a published BERT-like model
MAX_NAME_BYTES = 200  # an output name; bertcli adds up to ~50 bytes for its temporary and lock names (limit 255)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    integer: bool = True
    low_open: bool = False  # low itself is outside
    note: str = ""  # what a special value means, e.g. "0: all cores"

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def text(self) -> str:
        low = f"{self.low:g}" if not self.integer else f"{int(self.low):,}"
        high = f"{self.high:g}" if not self.integer else f"{int(self.high):,}"
        kind = "an integer" if self.integer else "a number"
        span = f"above {low} and at most {high}" if self.low_open else f"from {low} to {high}"
        return f"{kind} {span}" + (f" ({self.note})" if self.note else "")


def _i(low, high, note=""):
    return Range(low, high, True, False, note)


def _f(low, high, note="", low_open=False):
    return Range(low, high, False, low_open, note)


SEED = _i(0, SEED_MAX)
COUNT = 10**12  # steps, batches, instances: far beyond any run, exact in every integer type used

# command -> option (the function parameter's name) -> range
OPTIONS: dict[str, dict[str, Range]] = {
    "tokenize": {
        "vocab_size": _i(6, MAX_VOCAB, "the 5 special tokens included"),
        "character_coverage": _f(0.98, 1.0, "SentencePiece's range"),
        "input_sentence_size": _i(1, 10**10),
        "threads": _i(0, MAX_THREADS, "0: all cores"),
        "seed": SEED,
    },
    "make-data": {
        "max_seq_length": _i(8, MAX_SEQ_LENGTH, "BERT's max_position_embeddings"),
        "max_predictions": _i(1, MAX_SEQ_LENGTH - 3, "and at most max_seq_length - 3"),
        "masked_lm_prob": _f(*MASKED_LM_PROB_RANGE),
        "mask_replace_prob": _f(0.0, 1.0),
        "random_replace_prob": _f(0.0, 1.0),
        "short_seq_prob": _f(0.0, 0.999999),
        "dupe_factor": _i(1, 1000),
        "seed": SEED,
        "validation_fraction": _f(0.0, 0.999999),
        "window_chars": _i(1, 1 << 30),
        "shard_size": _i(1, 10**7),
        "workers": _i(0, MAX_WORKERS, "0: all cores"),
    },
    "show-data": {
        "start": _i(0, COUNT),
        "count": _i(0, 10**6),
    },
    "eval": {
        "batch_size": _i(1, 1 << 16),
        "max_batches": _i(0, COUNT, "0: all"),
    },
    "predict": {
        "top_k": _i(1, 1000),
    },
    "finetune": {  # its config's keys are checked by finetune/config.py's validate
        "seeds": _i(1, 100),
    },
    "glue": {
        "seeds": _i(1, 100),
    },
}

# dotted config key -> range (model.* are model.LIMITS and model.config_problems, shared with checkpoints)
CONFIG: dict[str, Range] = {
    "seed": SEED,
    "data.num_workers": _i(0, 64, "0: load in the training process"),
    "data.masked_lm_prob": _f(*MASKED_LM_PROB_RANGE),
    "data.mask_replace_prob": _f(0.0, 1.0),
    "data.random_replace_prob": _f(0.0, 1.0),
    "train.global_batch_size": _i(1, 1 << 24),
    "train.micro_batch_size": _i(1, 1 << 16),
    "train.max_steps": _i(1, COUNT),
    "train.warmup_steps": _i(0, COUNT, "and at most train.max_steps"),
    "train.learning_rate": _f(0.0, 1e30, "a diverging run is stopped by the trainer", low_open=True),
    "train.weight_decay": _f(0.0, 10.0),
    "train.adam_beta1": _f(0.0, 0.999999),
    "train.adam_beta2": _f(0.0, 0.999999),
    "train.adam_epsilon": _f(0.0, 1.0, low_open=True),
    "train.grad_clip": _f(0.0, 1e6, "0: off"),
    "system.pad_vocab_multiple": _i(1, 4096, "1: off"),
    "system.cpu_threads": _i(0, MAX_THREADS, "0: torch's default"),
    "system.peak_tflops": _f(0.0, 1e6, "null: a known GPU's data-sheet peak, or the CPU's measured rate", low_open=True),
    "system.log_interval": _i(1, COUNT),
    "system.eval_interval": _i(0, COUNT, "0: only at the end"),
    "system.eval_batches": _i(0, COUNT, "0: all"),
    "system.checkpoint_interval": _i(1, COUNT),
    "system.keep_checkpoints": _i(1, 10**6),
}


def _shown(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def problem(name: str, value, allowed: Range) -> str | None:
    """The one-line complaint about `value`, or None when it is in range."""
    if allowed.contains(value):
        return None
    return f"{name} {_shown(value)} is out of range: give {allowed.text()}"


def check_options(command: str, values: dict) -> None:
    """Refuse the first out-of-range option of `command` (None means "not given")."""
    for name, allowed in OPTIONS[command].items():
        value = values.get(name)
        if value is not None and (why := problem("--" + name.replace("_", "-"), value, allowed)):
            raise UsageError(why)


def config_problems(config) -> list[str]:
    """The out-of-range keys of a Config (wrong types are config.py's to report)."""
    out = []
    for key, allowed in CONFIG.items():
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        if node is not None and (isinstance(node, (int, float)) and not isinstance(node, bool)):
            if why := problem(key, node, allowed):
                out.append(why)
    return out


# --- an output name -------------------------------------------------------------------------------

def check_out_name(option: str, path) -> None:
    """An output path whose names the filesystem can hold, with room for bertcli's temporary names."""
    path = Path(path)
    parts = path.parts
    for i, part in enumerate(parts):
        limit = MAX_NAME_BYTES if i == len(parts) - 1 else 255
        size = len(os.fsencode(part))
        if size > limit:
            raise UsageError(f"{option}: the name {_shown(part)!r} is {size} bytes long; give a name of at most "
                             f"{limit} bytes (bertcli adds a suffix for its temporary files)")
    if len(os.fsencode(str(path.absolute()))) > 3800:
        raise UsageError(f"{option}: the path is longer than 3800 bytes; give a shorter one")
