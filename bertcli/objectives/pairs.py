"""What next-sentence (nsp) and sentence-order (sop) pairs share: the pairs as token spans, BERT's
chunk walk over a document, Google's truncation, assembly into `[CLS] A [SEP] B [SEP]`, and the
builder that turns a window into pair instances given an objective's pair planner.

An objective's planner decides only where B comes from; the walk, the target length, the
truncation and the layout are BERT's for both. Pure functions of (window, random generators).
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bertcli.instances import SpecialIds, Window, offsets_of


@dataclass
class PairStats:
    """What pairing one window did; make-data adds the counts up for the manifest."""

    random_next: int = 0
    actual_next: int = 0
    fallback_pairs: int = 0  # wanted a random B, only the same document was drawn: used the actual next
    dropped_pairs: int = 0  # wanted a random B, none from another document and no next sentence: no instance
    long_sentences: int = 0  # sentences longer than max_num_tokens (cut by truncation)



@dataclass
class Pairs:
    """Pairs as (start, length) spans of `Window.tokens`; `truncate` makes them fit."""

    a_start: np.ndarray
    a_length: np.ndarray
    b_start: np.ndarray
    b_length: np.ndarray
    is_random_next: np.ndarray  # uint8: 1 = B came from another document
    fallback: np.ndarray  # uint8: 1 = a random B was wanted, but only the same document could be drawn

    def __len__(self) -> int:
        return len(self.a_start)

    def take(self, order: np.ndarray) -> "Pairs":
        return Pairs(*(getattr(self, name)[order] for name in self.__dataclass_fields__))


def truncation_cuts(len_a, len_b, max_num_tokens: int):
    """How many tokens Google's `truncate_seq_pair` removes from A and from B (ints or arrays).

    Its loop removes one token at a time from the longer segment, B on a tie; once the two are
    within one token of each other it alternates. Which side loses a token depends only on the
    lengths, so the counts have a closed form; only front-or-back is random.
    """
    len_a, len_b = np.asarray(len_a, dtype=np.int64), np.asarray(len_b, dtype=np.int64)
    excess = np.maximum(len_a + len_b - max_num_tokens, 0)
    a_longer = len_a > len_b
    # The longer side alone (ties go to B) until A == B, or B == A - 1 ...
    lead = np.where(a_longer, len_a - len_b, len_b - len_a + 1)
    alone = np.minimum(excess, lead)
    # ... then alternating, starting with B if A was longer, else with A.
    rest = excess - alone
    first_side, second_side = (rest + 1) // 2, rest // 2
    cut_a = np.where(a_longer, alone + second_side, first_side)
    cut_b = np.where(a_longer, first_side, alone + second_side)
    return cut_a, cut_b


def truncate(pairs: Pairs, max_num_tokens: int, rng: np.random.Generator) -> Pairs:
    """Google's truncation for all pairs at once: each cut token comes off the front with p 1/2."""
    cut_a, cut_b = truncation_cuts(pairs.a_length, pairs.b_length, max_num_tokens)
    return Pairs(pairs.a_start + rng.binomial(cut_a, 0.5), pairs.a_length - cut_a,
                 pairs.b_start + rng.binomial(cut_b, 0.5), pairs.b_length - cut_b,
                 pairs.is_random_next, pairs.fallback)



def walk_document(starts: list[int], first: int, end: int, max_num_tokens: int, short_seq_prob: float, draw,
                  take_chunk: Callable[[int, int, int], int]) -> None:
    """BERT's chunk walk over sentences [first, end) of one document, for one pass.

    The target length is drawn once per document and pass, as Google does; a chunk is the
    fewest sentences from i on that reach it, or the rest of the document. `take_chunk(i, j,
    target)` makes the chunk [i, j)'s pair and returns where the next chunk starts (i < next;
    j, or earlier when it puts sentences back). `starts` are sentence token offsets as a list:
    this loop runs once per pair, and Python ints are faster here than numpy scalars.
    """
    target = max_num_tokens
    if draw() < short_seq_prob:
        target = 2 + int(draw() * (max_num_tokens - 1))  # uniform in [2, max_num_tokens]
    i = first
    while i < end:
        j = bisect_left(starts, starts[i] + target, i + 1, end)
        i = take_chunk(i, j, target)


def columns_of(out: array, width: int) -> np.ndarray:
    """The planners' flat int64 records, `width` per pair, as columns (width, pairs)."""
    return np.frombuffer(out, dtype=np.int64).reshape(-1, width).T if out else np.zeros((width, 0), dtype=np.int64)


def assemble(window: Window, pairs: Pairs, special: SpecialIds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[CLS] A [SEP] B [SEP]` for every pair, end to end: (tokens, offsets, segment_b_start).

    One gather from the window's tokens plus a [CLS] and a [SEP] appended at its end. Each
    instance is five runs (CLS, A, SEP, B, SEP) of consecutive source indices, so the index
    array is a cumulative sum of steps: 1 inside a run, a jump to the next run's source at its
    first position (cheaper than np.repeat).
    """
    n = len(pairs)
    cls_at, sep_at = len(window.tokens), len(window.tokens) + 1
    source = np.concatenate([window.tokens, np.array([special.cls, special.sep], dtype=window.tokens.dtype)])
    one = np.ones(n, dtype=np.int64)
    run_length = np.stack([one, pairs.a_length, one, pairs.b_length, one], axis=1).ravel()
    run_source = np.stack([one * cls_at, pairs.a_start, one * sep_at, pairs.b_start, one * sep_at], axis=1).ravel()
    offsets = offsets_of(pairs.a_length + pairs.b_length + 3)
    # int32 indices when they fit (always, for windows of a sane size): half the memory traffic.
    index_type = np.int32 if max(int(offsets[-1]), len(source)) < 2**31 else np.int64
    step = np.ones(int(offsets[-1]), dtype=index_type)
    if n:
        run_start = np.cumsum(run_length) - run_length
        step[run_start[1:]] = run_source[1:] - (run_source[:-1] + run_length[:-1] - 1)
        step[0] = run_source[0]
    return source[np.cumsum(step, dtype=index_type)], offsets, (pairs.a_length + 2).astype(np.int32)



@dataclass
class Built:
    """A window's instances before masking, end to end; what every objective's builder returns."""

    tokens: np.ndarray
    offsets: np.ndarray  # int64 [n + 1]
    segment_b_start: np.ndarray  # int32 [n]
    labels: np.ndarray  # uint8 [n]: the sentence task's label (0 without one)
    fallback: np.ndarray  # uint8 [n]
    counters: dict  # what the manifest adds up over windows


Planner = Callable[[Window, int, float, int, random.Random], "tuple[Pairs, PairStats]"]


def pair_instances(plan: Planner, window: Window, opts, special: SpecialIds, seed: list[int],
                   rng: np.random.Generator) -> Built:
    """A window's pairs for every duplication pass, truncated, shuffled and assembled."""
    pairs, stats = plan(window, opts.max_seq_length - 3, opts.short_seq_prob, opts.dupe_factor,
                        random.Random("/".join(map(str, seed))))
    pairs = truncate(pairs, opts.max_seq_length - 3, rng)
    pairs = pairs.take(rng.permutation(len(pairs)))  # Google shuffles all instances of all passes
    tokens, offsets, segment_b_start = assemble(window, pairs, special)
    # sop: is_random_next holds "swapped"
    return Built(tokens, offsets, segment_b_start, pairs.is_random_next, pairs.fallback,
                 {"dropped_pairs": stats.dropped_pairs, "long_sentences": stats.long_sentences})
