"""make-data's options: the one place their defaults and their rules live (the CLI reads both here).

`recipe()` is the part that determines the output; workers and strictness do not. Light on
purpose (no numpy, no torch): the command line imports it for its defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from bertcli.errors import UsageError
from bertcli.bounds import check_options
from bertcli.objectives import OBJECTIVES

SHORT_SEQ_PROB = 0.1  # BERT's, for nsp and sop (mlm packs every sequence full)


@dataclass
class MakeDataOptions:
    objective: str = "nsp"  # nsp (BERT), sop (ALBERT's sentence order) or mlm (packed, no pairs: RoBERTa)
    cross_document: bool = True  # mlm: sequences run on across documents ([SEP] between them)
    max_seq_length: int = 128
    max_predictions: int | None = None  # None: ceil(max_seq_length * masked_lm_prob), 20 at 128 as Google
    masked_lm_prob: float = 0.15
    mask_replace_prob: float = 0.8  # a chosen position becomes [MASK] ...
    random_replace_prob: float = 0.1  # ... or a random token; it stays as it is otherwise
    short_seq_prob: float | None = None  # None: 0.1 for nsp and sop; mlm refuses it
    dupe_factor: int = 5
    whole_word_mask: bool = False
    seed: int = 12345
    validation_fraction: float = 0.01
    shard_size: int = 100_000
    window_chars: int = 1_000_000
    workers: int = 0  # 0: all cores; does not change the output
    strict: bool = False

    def resolve(self) -> "MakeDataOptions":
        problems = []
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r} must be one of {', '.join(OBJECTIVES)}")
        paired = OBJECTIVES[self.objective].has_sentence_task  # pairs: short sequences, never across documents
        if not paired and self.short_seq_prob is not None:
            # Refused rather than ignored: a user who sets it expects shorter sequences, and mlm has none.
            raise UsageError("--short-seq-prob has no meaning with --objective mlm (every sequence is packed to "
                             "--max-seq-length); drop it")
        if paired and not self.cross_document:
            raise UsageError(f"--no-cross-document applies to --objective mlm only ({self.objective} pairs never "
                             "cross documents); drop it")
        if self.short_seq_prob is None and paired:
            self.short_seq_prob = SHORT_SEQ_PROB
        # each option's own range: bounds.OPTIONS["make-data"], the one table the docs list
        check_options("make-data", asdict(self))
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            problems.append(f"--mask-replace-prob {self.mask_replace_prob} and --random-replace-prob "
                            f"{self.random_replace_prob} must be in [0, 1] and add up to at most 1 (the rest stays unchanged)")
        if self.max_predictions is not None and not 1 <= self.max_predictions <= self.max_seq_length - 3:
            problems.append(f"--max-predictions {self.max_predictions} must be between 1 and max_seq_length - 3 "
                            f"({self.max_seq_length - 3}), the positions an instance can mask")
        if problems:
            raise UsageError("; ".join(problems))
        if self.max_predictions is None:
            self.max_predictions = derived_max_predictions(self.max_seq_length, self.masked_lm_prob)
        return self

    def recipe(self) -> dict:
        """Options that determine the output (workers and strictness do not)."""
        d = asdict(self)
        for k in ("workers", "strict"):
            d.pop(k)
        return d


def derived_max_predictions(max_seq_length: int, masked_lm_prob: float) -> int:
    """ceil(max_seq_length x masked_lm_prob), at least 1 and at most the maskable positions (20 at 128, 0.15)."""
    return min(max(1, math.ceil(max_seq_length * masked_lm_prob - 1e-9)), max_seq_length - 3)


def default(name: str):
    """The default of MakeDataOptions' field `name` (the CLI shows and passes these)."""
    return next(f.default for f in fields(MakeDataOptions) if f.name == name)
