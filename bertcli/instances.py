"""What every objective's instances share: tokenized windows, the tokenizer's special ids, and
BERT's masked-LM masking.

Pure functions of (tokenized documents, random generators): no files, no processes. Pairs and
packed sequences are built by the objectives (bertcli/objectives/); the masking rules are
Google's `create_pretraining_data.py`, with one fix: a masked position replaced by a random
token gets a token the tokenizer allows as a replacement, never a special token ([CLS],
[MASK], …) or an [unused…] slot.

Token ids of [CLS]/[SEP]/[MASK] and the allowed replacements come from the tokenizer (see
`SpecialIds`), never from constants: a published vocabulary has [CLS]=101.

Speed comes from never copying tokens while building instances. A window's documents are one
flat token array, sentences are offsets into it, and masks are sampled for all instances at
once with numpy. The random *streams* differ from Google's script; the distributions of every
decision are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import numpy as np


@dataclass(frozen=True)
class SpecialIds:
    """The tokenizer's ids that building instances needs (see Tokenizer.special_ids)."""

    cls: int
    sep: int
    mask: int

    @classmethod
    def of(cls, tokenizer) -> "SpecialIds":
        return cls(tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)


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
        return cls(tokens, offsets_of(lengths[kept]), offsets_of(per_document[per_document > 0]))

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def sentences_per_document(self) -> np.ndarray:
        return np.diff(self.document_starts)


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """[0, l0, l0 + l1, ...]: where each of the ragged rows starts, and the end."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


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
