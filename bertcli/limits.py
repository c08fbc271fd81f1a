"""Bounds and type tests that every reader of a possibly crafted file (manifest, shard header,
checkpoint state) and every option check shares, defined once.

Not here: the checks themselves, which live with the format they guard.
"""

from __future__ import annotations

import re

MAX_COUNT = 2**62  # steps, tokens, instances, seeds: far beyond any run, small enough for int64
SHA256 = re.compile(r"[0-9a-f]{64}")  # use with fullmatch
MAX_SEQ_LENGTH = 512  # BERT's max_position_embeddings; longer needs a model made for it
MASKED_LM_PROB_RANGE = (0.05, 0.5)  # BERT's 0.15 up to the 20-40 % of MosaicBERT, cramming and ModernBERT


def is_int(value) -> bool:
    """An integer that is not a bool (JSON's true is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float that is not a bool (finite or not: callers that need finite say so)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
