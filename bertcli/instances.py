"""BERT's pretraining instances: next-sentence pairs and masked-LM masking.

Pure functions of (tokenized documents, random generators): no files, no processes. The rules
are Google's `create_pretraining_data.py` (see shared/bert_reference.md), with two fixes:

- a pair is labelled "random next" only when segment B really comes from another document. If
  no other document can be drawn, the pair falls back to the actual next sentences (label 0)
  and is counted; a one-sentence chunk with nothing after it is dropped and counted.
- a masked position replaced by a random token gets a non-special token, never [CLS]/[MASK]/...

Scalar decisions (lengths, splits, coin flips) use `random.Random`, which is fast per call;
masking is vectorised with numpy over all instances of a window at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from bertcli.tokenizer import NUM_SPECIAL, SPECIAL_IDS

CLS, SEP, MASK = SPECIAL_IDS["cls"], SPECIAL_IDS["sep"], SPECIAL_IDS["mask"]
RANDOM_DOC_TRIES = 10


@dataclass
class PairStats:
    """Counts that the manifest reports; they add up across windows."""

    random_next: int = 0
    actual_next: int = 0
    fallback_pairs: int = 0  # wanted a random B, none from another document: used the actual next
    dropped_pairs: int = 0  # wanted a random B, none anywhere: no instance
    long_sentences: int = 0  # sentences longer than max_num_tokens (cut by truncation)

    def add(self, other: "PairStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Pair:
    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool
    fallback: bool = False


def _concat(sentences: list[list[int]]) -> list[int]:
    out: list[int] = []
    for s in sentences:
        out.extend(s)
    return out


def _random_b(documents, doc_index, target_b_length, rng) -> list[int] | None:
    """Google's draw: up to 10 tries for another document, then sentences from a random start."""
    other = doc_index
    for _ in range(RANDOM_DOC_TRIES):
        other = rng.randint(0, len(documents) - 1)
        if other != doc_index:
            break
    if other == doc_index:
        return None
    document = documents[other]
    tokens_b: list[int] = []
    for sentence in document[rng.randint(0, len(document) - 1):]:
        tokens_b.extend(sentence)
        if len(tokens_b) >= target_b_length:
            break
    return tokens_b


def truncate_pair(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Google's truncation as (cut from front of A, back of A, front of B, back of B).

    While too long, one token goes from the longer segment (B on a tie), from its front or back
    with probability 1/2. Counting instead of deleting list items keeps it O(excess).
    """
    cuts = [0, 0, 0, 0]
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a -= 1
            side = 0
        else:
            len_b -= 1
            side = 2
        cuts[side + (0 if rng.random() < 0.5 else 1)] += 1
    return cuts[0], cuts[1], cuts[2], cuts[3]


def pairs_from_document(documents: list[list[list[int]]], doc_index: int, max_num_tokens: int,
                        short_seq_prob: float, rng: random.Random, stats: PairStats) -> list[Pair]:
    """All pairs of one document for one duplication pass (Google's create_instances_from_document)."""
    document = documents[doc_index]
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    pairs: list[Pair] = []
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = _concat(chunk[:a_end])
            tokens_b: list[int] | None = None
            is_random = fallback = False
            if len(chunk) == 1 or rng.random() < 0.5:
                tokens_b = _random_b(documents, doc_index, target - len(tokens_a), rng)
                if tokens_b is not None:
                    is_random = True
                    i -= len(chunk) - a_end  # put the unused sentences back
                else:
                    fallback = True
            if tokens_b is None:
                if len(chunk) >= 2:
                    tokens_b = _concat(chunk[a_end:])
                elif i + 1 < len(document):
                    # A one-sentence chunk cut short by the target: its true successor is B.
                    tokens_b = list(document[i + 1])
                else:
                    stats.dropped_pairs += 1
                    tokens_b = []
            if tokens_b:
                cut_fa, cut_ba, cut_fb, cut_bb = truncate_pair(len(tokens_a), len(tokens_b), max_num_tokens, rng)
                tokens_a = tokens_a[cut_fa:len(tokens_a) - cut_ba]
                tokens_b = tokens_b[cut_fb:len(tokens_b) - cut_bb]
                pairs.append(Pair(tokens_a, tokens_b, is_random, fallback))
                if is_random:
                    stats.random_next += 1
                else:
                    stats.actual_next += 1
                stats.fallback_pairs += fallback
            chunk = []
            chunk_length = 0
        i += 1
    return pairs


@dataclass
class MaskingParams:
    masked_lm_prob: float
    max_predictions: int
    vocab_size: int
    whole_word_mask: bool = False
    word_starts: np.ndarray | None = field(default=None, repr=False)  # bool per id (whole-word only)


@dataclass
class Masked:
    """Flat masking result for a batch of instances laid end to end."""

    input_ids: np.ndarray  # tokens with masks applied, same layout as the input
    positions: np.ndarray  # position inside its instance, ascending per instance
    original_ids: np.ndarray  # the label: the token that stood at that position
    counts: np.ndarray  # masked positions per instance


def num_to_predict(lengths: np.ndarray, params: MaskingParams) -> np.ndarray:
    """Google's count: round(len * prob), at least 1, at most max_predictions (len counts [CLS]/[SEP])."""
    n = np.rint(lengths * params.masked_lm_prob).astype(np.int64)
    return np.minimum(params.max_predictions, np.maximum(1, n))


def mask_tokens(tokens: np.ndarray, offsets: np.ndarray, params: MaskingParams, rng: np.random.Generator) -> Masked:
    """Choose and corrupt masked positions for instances `tokens[offsets[i]:offsets[i+1]]`.

    Candidates are all positions but [CLS]/[SEP]; with whole-word masking a word's pieces form
    one group (a piece not starting with "▁" joins the group before it). Groups are visited in
    random order, skipping one that would overflow the count. Each chosen position becomes
    [MASK] with p 0.8, stays with p 0.1, becomes a random non-special token with p 0.1.
    """
    n_inst = len(offsets) - 1
    lengths = np.diff(offsets)
    instance = np.repeat(np.arange(n_inst), lengths)
    position = np.arange(len(tokens)) - offsets[instance]
    candidate = (tokens != CLS) & (tokens != SEP)
    quota = num_to_predict(lengths, params)

    if params.whole_word_mask:
        prev_candidate = np.concatenate([[False], candidate[:-1]]) & (position > 0)
        continues = candidate & prev_candidate & ~params.word_starts[tokens]
        group_start = candidate & ~continues
    else:
        group_start = candidate
    starts = np.flatnonzero(group_start)
    group_of_token = np.cumsum(group_start) - 1  # valid for candidate tokens
    group_len = np.bincount(group_of_token[candidate], minlength=len(starts))
    group_inst = instance[starts]
    order = np.lexsort((rng.random(len(starts)), group_inst))  # by instance, then random key

    if params.whole_word_mask:
        chosen_groups = _greedy_groups(order, group_inst, group_len, quota)
    else:
        first_of_inst = np.searchsorted(group_inst[order], np.arange(n_inst))
        rank = np.arange(len(order)) - first_of_inst[group_inst[order]]
        chosen_groups = order[rank < quota[group_inst[order]]]
    chosen = np.zeros(len(tokens), dtype=bool)
    chosen[starts[chosen_groups]] = True
    if params.whole_word_mask:
        chosen = chosen[np.flatnonzero(group_start)[group_of_token]] & candidate
    where = np.flatnonzero(chosen)  # ascending, so positions are sorted within each instance

    corrupted = tokens.copy()
    u = rng.random(len(where))
    replace_random = u >= 0.9
    corrupted[where[u < 0.8]] = MASK
    corrupted[where[replace_random]] = rng.integers(NUM_SPECIAL, params.vocab_size, int(replace_random.sum()))
    counts = np.bincount(instance[where], minlength=n_inst)
    return Masked(corrupted, position[where], tokens[where], counts)


def _greedy_groups(order, group_inst, group_len, quota) -> np.ndarray:
    """Google's whole-word selection: take groups in shuffled order while they fit the quota."""
    chosen: list[int] = []
    taken = 0
    current = -1
    full = False
    group_inst, group_len, quota = group_inst.tolist(), group_len.tolist(), quota.tolist()
    for g in order.tolist():
        inst = group_inst[g]
        if inst != current:
            current, taken, full = inst, 0, False
        if full:
            continue
        if taken >= quota[inst]:
            full = True
            continue
        if taken + group_len[g] > quota[inst]:
            continue
        chosen.append(g)
        taken += group_len[g]
    return np.asarray(chosen, dtype=np.int64)
