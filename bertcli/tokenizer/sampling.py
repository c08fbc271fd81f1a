"""Sampling a corpus for tokenizer training: a uniform sample in one pass, long lines left out."""

from __future__ import annotations

import itertools
import random
from typing import Iterable

# SentencePiece's trainer drops longer lines (in bytes) without a word; we pass the limit
# explicitly and leave such lines out ourselves, so that they can be counted and reported.
MAX_SENTENCE_BYTES = 4192


def sample_sentences(sentences: Iterable[str], size: int, seed: int) -> tuple[list[str], int]:
    """A uniform random sample of at most `size` sentences, in one pass with bounded memory.

    Reservoir sampling (Vitter's algorithm R), seeded so that the same corpus gives the same
    sample. Returns the sample and how many sentences were seen.
    """
    rng = random.Random(seed)
    remaining = iter(sentences)
    sample = list(itertools.islice(remaining, size))  # filling the reservoir needs no random draws
    seen = len(sample)
    for seen, sentence in enumerate(remaining, seen + 1):
        j = rng.randrange(seen)  # keep the seen-th sentence with probability size / seen
        if j < size:
            sample[j] = sentence
    return sample, seen


def drop_long_sentences(sentences: list[str], limit: int = MAX_SENTENCE_BYTES) -> list[str]:
    """The sentences of at most `limit` UTF-8 bytes, the ones SentencePiece will train on.

    Applied to the sample rather than to the stream, where a per-line Python call costs more
    than the rest of the reading.
    """
    # A character is at most 4 UTF-8 bytes, so only long strings need encoding to be measured.
    short = limit // 4
    return [s for s in sentences if len(s) <= short or len(s.encode("utf-8")) <= limit]


