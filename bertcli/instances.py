"""BERT's pretraining instances: next-sentence pairs and masked-LM masking.

Pure functions of (tokenized documents, random generators): no files, no processes. The rules
are Google's `create_pretraining_data.py` (see shared/bert_reference.md), with two fixes:

- a pair is labelled "random next" only when segment B really comes from another document. If
  the 10 tries draw only the current document, the pair falls back to the actual next sentences
  (label 0) and is counted; a one-sentence chunk with nothing after it is dropped and counted.
- a masked position replaced by a random token gets a token the tokenizer allows as a
  replacement, never a special token ([CLS], [MASK], …) or an [unused…] slot.

Token ids of [CLS]/[SEP]/[MASK] and the allowed replacements come from the tokenizer (see
`SpecialIds`), never from constants: a published vocabulary has [CLS]=101.

Speed comes from never copying tokens while pairing. A window's documents are one flat token
array; since A is always consecutive sentences of one document and so is B, a pair is just two
(start, length) spans of it. The sequential part (Google's walk with its put-backs) runs on
sentence offsets with one random draw per decision; tokens are gathered once for all pairs with
numpy, and masks are sampled for all instances at once. The random *streams* differ from
Google's script; the distributions of every decision are the same.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

RANDOM_DOC_TRIES = 10


@dataclass(frozen=True)
class SpecialIds:
    """The tokenizer's ids that building instances needs (see Tokenizer.special_ids)."""

    cls: int
    sep: int
    mask: int

    @classmethod
    def of(cls, tokenizer) -> "SpecialIds":
        return cls(tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)


@dataclass
class PairStats:
    """What pairing one window did; make-data adds the counts up for the manifest."""

    random_next: int = 0
    actual_next: int = 0
    fallback_pairs: int = 0  # wanted a random B, only the same document was drawn: used the actual next
    dropped_pairs: int = 0  # wanted a random B, none from another document and no next sentence: no instance
    long_sentences: int = 0  # sentences longer than max_num_tokens (cut by truncation)


# ---------------------------------------------------------------------------------------------
# Tokenized documents

@dataclass
class Window:
    """Tokenized documents laid end to end; empty sentences and documents are already gone."""

    tokens: np.ndarray  # int32 [num_tokens]
    sentence_starts: np.ndarray  # int64 [num_sentences + 1]: sentence k is tokens[s[k]:s[k + 1]]
    document_starts: np.ndarray  # int64 [num_documents + 1]: document d is sentences [d[i], d[i + 1])

    @classmethod
    def from_encoded(cls, ids: list[list[int]], sentences_per_document: list[int]) -> "Window":
        """Build from the tokenizer's output for consecutive documents of the given sizes.

        A sentence that encodes to nothing (it normalised away) is dropped, and so is a
        document left without sentences: Google's script would crash on either.
        """
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        tokens = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        document_of = np.repeat(np.arange(len(sentences_per_document)), sentences_per_document)
        kept = lengths > 0
        per_document = np.bincount(document_of[kept], minlength=len(sentences_per_document))
        return cls(tokens, _starts(lengths[kept]), _starts(per_document[per_document > 0]))

    @classmethod
    def from_documents(cls, documents: list[list[list[int]]]) -> "Window":
        return cls.from_encoded([s for d in documents for s in d], [len(d) for d in documents])

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def sentences_per_document(self) -> np.ndarray:
        return np.diff(self.document_starts)


def _starts(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Next-sentence pairs

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


def plan_pairs(window: Window, max_num_tokens: int, short_seq_prob: float, dupe_factor: int,
               rng: random.Random) -> tuple[Pairs, PairStats]:
    """Every pass over every document of the window, in order, untruncated (see `truncate`)."""
    starts = window.sentence_starts.tolist()
    document_starts = window.document_starts.tolist()
    out = array("q")  # per pair: a_start, a_end, b_start, b_end, is_random_next, fallback
    stats = PairStats(long_sentences=int((np.diff(window.sentence_starts) > max_num_tokens).sum()))
    for _ in range(dupe_factor):
        for d in range(window.num_documents):
            document_pairs(d, starts, document_starts, max_num_tokens, short_seq_prob, rng, out, stats)
    columns = np.frombuffer(out, dtype=np.int64).reshape(-1, 6).T if out else np.zeros((6, 0), dtype=np.int64)
    pairs = Pairs(columns[0].copy(), columns[1] - columns[0], columns[2].copy(), columns[3] - columns[2],
                  columns[4].astype(np.uint8), columns[5].astype(np.uint8))
    stats.random_next = int(pairs.is_random_next.sum())
    stats.actual_next = len(pairs) - stats.random_next
    stats.fallback_pairs = int(pairs.fallback.sum())
    return pairs, stats


def document_pairs(d: int, starts: list[int], document_starts: list[int], max_num_tokens: int,
                   short_seq_prob: float, rng: random.Random, out: array, stats: PairStats) -> None:
    """Google's `create_instances_from_document` for one document and one pass, on spans.

    `starts` are sentence token offsets, `document_starts` document sentence offsets (lists:
    this loop runs once per pair and Python ints are faster here than numpy scalars). Appends
    (a_start, a_end, b_start, b_end, is_random_next, fallback) per pair to `out`.
    Uniform integers are `int(random() * n)`, as exact as Python floats allow and several times
    cheaper than `randint`.
    """
    draw = rng.random
    num_documents = len(document_starts) - 1
    first, end = document_starts[d], document_starts[d + 1]
    target = max_num_tokens  # drawn once per document and pass, as Google does
    if draw() < short_seq_prob:
        target = 2 + int(draw() * (max_num_tokens - 1))  # uniform in [2, max_num_tokens]
    i = first
    while i < end:
        # The chunk is sentences [i, j): the fewest that reach the target, or the rest of the document.
        j = bisect_left(starts, starts[i] + target, i + 1, end)
        n = j - i
        a = i + 1 + int(draw() * (n - 1)) if n >= 2 else j  # A is sentences [i, a)
        if n == 1 or draw() < 0.5:
            other = _other_document(d, num_documents, draw)
            if other >= 0:
                lo, hi = document_starts[other], document_starts[other + 1]
                s = lo + int(draw() * (hi - lo))
                # B: sentences from a random start until it reaches target - len(A), or that document ends.
                e = bisect_left(starts, starts[s] + target - (starts[a] - starts[i]), s + 1, hi)
                out.extend((starts[i], starts[a], starts[s], starts[e], 1, 0))
                i = a  # put back: the chunk's unused sentences start the next chunk
                continue
            if n >= 2:
                out.extend((starts[i], starts[a], starts[a], starts[j], 0, 1))
            elif j < end:
                # A one-sentence chunk that reached the target alone: its true successor is B
                # (and still starts the next chunk).
                out.extend((starts[i], starts[j], starts[j], starts[j + 1], 0, 1))
            else:
                stats.dropped_pairs += 1
        else:
            out.extend((starts[i], starts[a], starts[a], starts[j], 0, 0))
        i = j


def _other_document(d: int, num_documents: int, draw) -> int:
    """Google's up-to-10 tries for a document other than d; -1 when every try drew d."""
    for _ in range(RANDOM_DOC_TRIES):
        other = int(draw() * num_documents)
        if other != d:
            return other
    return -1


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
    offsets = _starts(pairs.a_length + pairs.b_length + 3)
    # int32 indices when they fit (always, for windows of a sane size): half the memory traffic.
    index_type = np.int32 if max(int(offsets[-1]), len(source)) < 2**31 else np.int64
    step = np.ones(int(offsets[-1]), dtype=index_type)
    if n:
        run_start = np.cumsum(run_length) - run_length
        step[run_start[1:]] = run_source[1:] - (run_source[:-1] + run_length[:-1] - 1)
        step[0] = run_source[0]
    return source[np.cumsum(step, dtype=index_type)], offsets, (pairs.a_length + 2).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Masking

@dataclass
class MaskingParams:
    masked_lm_prob: float
    max_predictions: int
    special: SpecialIds
    replacement_ids: np.ndarray = field(repr=False)  # ids a position may be replaced by at random
    whole_word_mask: bool = False
    word_starts: np.ndarray | None = field(default=None, repr=False)  # bool per id (whole-word only)
    # BERT's 80/10/10: a chosen position becomes [MASK], a random token, or stays (the rest)
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    @classmethod
    def from_tokenizer(cls, tokenizer, masked_lm_prob: float, max_predictions: int, whole_word_mask: bool = False,
                       mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1) -> "MaskingParams":
        return cls(masked_lm_prob, max_predictions, SpecialIds.of(tokenizer), tokenizer.replacement_ids(),
                   whole_word_mask, tokenizer.word_starts() if whole_word_mask else None,
                   mask_replace_prob, random_replace_prob)


@dataclass
class Masked:
    """Flat masking result for a batch of instances laid end to end."""

    input_ids: np.ndarray  # tokens with masks applied, same layout as the input
    positions: np.ndarray  # position inside its instance, ascending per instance
    original_ids: np.ndarray  # the label: the token that stood at that position
    counts: np.ndarray  # masked positions per instance


def num_to_predict(lengths: np.ndarray, params: MaskingParams) -> np.ndarray:
    """Google's count: round(len * prob), at least 1, at most max_predictions (len counts [CLS]/[SEP]).

    np.rint rounds half to even, exactly as Python's round() in Google's script.
    """
    n = np.rint(np.asarray(lengths) * params.masked_lm_prob).astype(np.int64)
    return np.minimum(params.max_predictions, np.maximum(1, n))


def mask_tokens(tokens: np.ndarray, offsets: np.ndarray, params: MaskingParams, rng: np.random.Generator) -> Masked:
    """Choose and corrupt masked positions for instances `tokens[offsets[i]:offsets[i+1]]`.

    Candidates are all positions but [CLS]/[SEP]. Google visits them in random order and takes
    num_to_predict of them (all, if fewer), i.e. a uniform random subset of that size. With
    whole-word masking a word's pieces form one group (a piece not starting with "▁" joins the
    group before it; for WordPiece, a piece starting with "##") and groups are taken in random order
    while they fit. Each chosen position becomes [MASK] with p 0.8, stays with p 0.1, becomes a
    random allowed replacement token with p 0.1 (BERT's split; `mask_replace_prob` and
    `random_replace_prob` change it, e.g. 1 / 0 for all [MASK]).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    candidate = (tokens != params.special.cls) & (tokens != params.special.sep)
    quota = num_to_predict(np.diff(offsets), params)
    if params.whole_word_mask:
        where = _whole_word_positions(tokens, offsets, candidate, params.word_starts, quota, rng)
        instance = np.searchsorted(offsets, where, side="right") - 1
    else:
        where, instance = _uniform_positions(candidate, offsets, quota, rng)

    corrupted = tokens.copy()
    u = rng.random(len(where))
    # 1 - 0.1 is exactly 0.9: BERT's default split draws the same masks as before it was configurable
    replace_random = u >= 1.0 - params.random_replace_prob
    corrupted[where[u < params.mask_replace_prob]] = params.special.mask
    pool = params.replacement_ids
    corrupted[where[replace_random]] = pool[rng.integers(0, len(pool), int(replace_random.sum()))]
    counts = np.bincount(instance, minlength=len(offsets) - 1)
    return Masked(corrupted, where - offsets[instance], tokens[where], counts)


def _uniform_positions(candidate: np.ndarray, offsets: np.ndarray, quota: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random subset of min(quota, candidates) candidates per instance: (flat indices
    ascending, their instance)."""
    candidates = np.flatnonzero(candidate)
    first = np.searchsorted(candidates, offsets[:-1])
    count = np.searchsorted(candidates, offsets[1:]) - first
    ranks = sample_ranks(count, np.minimum(quota, count), rng)
    row, col = np.nonzero(ranks >= 0)  # row-major: instances in order, ranks ascending within each
    return candidates[first[row] + ranks[row, col]], row


def sample_ranks(population: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row i, size[i] distinct integers drawn uniformly from range(population[i]).

    Robert Floyd's algorithm, one step for all rows at a time: step k draws t in [0, j] with
    j = population - size + k, and keeps t unless already taken, else j. Each row costs
    size² comparisons (size ≤ max_predictions), far less than sorting every candidate.
    Returns an array (rows, max size), each row ascending with -1 padding first.
    """
    n, width = len(size), int(size.max(initial=0))
    picked = np.full((n, width), -1, dtype=np.int64)
    for k in range(width):
        j = population - size + k
        t = (rng.random(n) * (j + 1)).astype(np.int64)
        taken = (picked[:, :k] == t[:, None]).any(axis=1)
        picked[:, k] = np.where(size > k, np.where(taken, j, t), -1)
    picked.sort(axis=1)
    return picked


def _whole_word_positions(tokens: np.ndarray, offsets: np.ndarray, candidate: np.ndarray, word_starts: np.ndarray,
                          quota: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Google's whole-word selection, all instances at once.

    Per instance, groups are visited in a random order; a group is taken if it fits in what is
    left of the quota; the visit stops once the quota is reached.
    """
    n = len(offsets) - 1
    continues = candidate & ~word_starts[tokens]
    continues[1:] &= candidate[:-1]
    continues[offsets[:-1][offsets[:-1] < len(tokens)]] = False  # no group spans two instances
    group_start = candidate & ~continues
    starts = np.flatnonzero(group_start)
    if len(starts) == 0:
        return starts
    group_of_token = np.cumsum(group_start) - 1
    group_length = np.bincount(group_of_token[candidate], minlength=len(starts))
    first = np.searchsorted(starts, offsets[:-1])
    count = np.searchsorted(starts, offsets[1:]) - first
    width = int(count.max(initial=0))

    keys = rng.random((n, width))
    keys[np.arange(width)[None, :] >= count[:, None]] = 2.0  # padding sorts last
    order = np.argsort(keys, axis=1)
    taken = np.zeros(n, dtype=np.int64)
    chosen = np.zeros(len(starts), dtype=bool)
    for k in range(width):
        live = (k < count) & (taken < quota)
        if not live.any():
            break
        group = first + order[:, k]
        length = np.where(live, group_length[np.minimum(group, len(starts) - 1)], 0)
        take = live & (taken + length <= quota)
        taken += np.where(take, length, 0)
        chosen[group[take]] = True
    return np.flatnonzero(candidate & chosen[group_of_token])
