"""Pretraining objectives beside BERT's: sentence-order pairs (ALBERT) and packed MLM-only sequences (RoBERTa).

`Objective` is what the rest of bertcli reads about an objective: whether it has a sentence
task, what its label 1 means, and the names of its metrics. The data's manifest records the
objective (`options.objective`; data made before it existed is `nsp`), and pretrain, eval and
export follow it rather than guess.

The builders are pure functions of (tokenized window, random generator), like instances.py's
next-sentence pairs, and reuse its `Window`, `Pairs`, `truncate` and `assemble`:

- `plan_sop_pairs` (ALBERT's sentence-order prediction): A and B are consecutive segments of
  one document, in their order (label 0) or swapped (label 1) with probability 1/2. Target
  length, the short-sequence rule, the chunk walk and truncation are BERT's; only where B comes
  from differs, so the task cannot be solved by topic alone.
- `pack_sequences` (RoBERTa's FULL-SENTENCES / DOC-SENTENCES): no pairs. The window's sentences
  are laid end to end, with a `[SEP]` between documents, and cut into `[CLS] ... [SEP]`
  sequences of exactly max_seq_length tokens: the sentence at a cut continues in the next
  sequence, so only the last sequence is short. With `cross_document=False` every document is
  packed alone (its last sequence is short). Segment ids are all 0.

Masking itself is instances.mask_tokens for every objective; `remask_params` only chooses its
parameters for pretrain. Not here: files, processes.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from bertcli.errors import DataError, UsageError
from bertcli.instances import MaskingParams, Pairs, PairStats, SpecialIds, Window


@dataclass(frozen=True)
class Objective:
    name: str
    sentence_metric: str | None  # eval's metric stem: next_sentence_accuracy / sentence_order_accuracy
    sentence_log: str | None  # the short stem in metrics.jsonl: nsp_loss / sop_loss
    label_names: tuple[str, str] | None  # what labels 0 and 1 mean

    @property
    def has_sentence_task(self) -> bool:
        return self.sentence_metric is not None


OBJECTIVES = {
    "nsp": Objective("nsp", "next_sentence", "nsp", ("actual next", "random next")),
    "sop": Objective("sop", "sentence_order", "sop", ("in order", "swapped")),
    "mlm": Objective("mlm", None, None, None),
}
DEFAULT = "nsp"  # BERT's; also what data made before objectives existed holds


def get_objective(name: str | None) -> Objective:
    if name is None:
        return OBJECTIVES[DEFAULT]
    if name not in OBJECTIVES:
        raise UsageError(f"objective {name!r} is not one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def manifest_objective(manifest: dict, where="the data manifest") -> Objective:
    """The objective a make-data output was built for; a crafted value is a one-line error."""
    name = manifest.get("options", {}).get("objective", DEFAULT)
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise DataError(f"{where}: options.objective is {name!r}, not one of {', '.join(OBJECTIVES)}; rebuild the data")
    return OBJECTIVES[name]


def checkpoint_objective(state: dict, ckpt) -> Objective:
    """The objective a checkpoint was trained for (its data signature; checkpoints from before objectives: nsp)."""
    signature = state.get("data_signature")
    name = signature.get("objective", DEFAULT) if isinstance(signature, dict) else DEFAULT
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise DataError(f"checkpoint {ckpt}: data_signature.objective is {name!r}, not one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def remask_params(options: dict, max_seq_length: int, max_predictions: int, tokenizer,
                  masked_lm_prob: float | None = None, mask_replace_prob: float | None = None,
                  random_replace_prob: float | None = None) -> MaskingParams:
    """Masking for pretrain's dynamic masks: the data's options (a manifest's, checked by
    shards.ManifestCheck), each overridable, with the tokenizer's ids.

    A rate of its own gets max_predictions derived as make-data derives it (ceil(length x rate)),
    so a 30 % rate on data made at 15 % is not capped at the data's 20 positions.
    """
    rate = options["masked_lm_prob"] if masked_lm_prob is None else masked_lm_prob
    if rate != options["masked_lm_prob"]:
        max_predictions = min(max(1, math.ceil(max_seq_length * rate - 1e-9)), max_seq_length - 3)
    # data made before the split was configurable used BERT's 0.8 / 0.1
    mask_replace = options.get("mask_replace_prob", 0.8) if mask_replace_prob is None else mask_replace_prob
    random_replace = options.get("random_replace_prob", 0.1) if random_replace_prob is None else random_replace_prob
    return MaskingParams.from_tokenizer(tokenizer, rate, max_predictions, bool(options.get("whole_word_mask")),
                                        mask_replace, random_replace)


# ---------------------------------------------------------------------------------------------
# Sentence order (ALBERT)

def plan_sop_pairs(window: Window, max_num_tokens: int, short_seq_prob: float, dupe_factor: int,
                   rng: random.Random) -> tuple[Pairs, PairStats]:
    """Every pass over every document, in order, untruncated; `is_random_next` holds the swap label.

    PairStats.dropped_pairs counts one-sentence documents (once per pass): nothing to put in
    order, so no instance.
    """
    starts = window.sentence_starts.tolist()
    document_starts = window.document_starts.tolist()
    out = array("q")  # per pair: a_start, a_end, b_start, b_end, swapped
    stats = PairStats(long_sentences=int((np.diff(window.sentence_starts) > max_num_tokens).sum()))
    for _ in range(dupe_factor):
        for d in range(window.num_documents):
            document_sop_pairs(starts, document_starts[d], document_starts[d + 1], max_num_tokens, short_seq_prob,
                               rng, out, stats)
    columns = np.frombuffer(out, dtype=np.int64).reshape(-1, 5).T if out else np.zeros((5, 0), dtype=np.int64)
    swapped = columns[4].astype(np.uint8)
    pairs = Pairs(columns[0].copy(), columns[1] - columns[0], columns[2].copy(), columns[3] - columns[2],
                  swapped, np.zeros(len(swapped), dtype=np.uint8))
    stats.random_next, stats.actual_next = 0, len(pairs)
    return pairs, stats


def document_sop_pairs(starts: list[int], first: int, end: int, max_num_tokens: int, short_seq_prob: float,
                       rng: random.Random, out: array, stats: PairStats) -> None:
    """BERT's chunk walk over sentences [first, end) of one document; B is always A's continuation."""
    draw = rng.random
    target = max_num_tokens  # drawn once per document and pass, as BERT does
    if draw() < short_seq_prob:
        target = 2 + int(draw() * (max_num_tokens - 1))  # uniform in [2, max_num_tokens]
    i = first
    while i < end:
        # The chunk is sentences [i, j): the fewest that reach the target, or the rest of the document.
        j = bisect_left(starts, starts[i] + target, i + 1, end)
        following = j  # where the next chunk starts
        if j - i >= 2:
            a = i + 1 + int(draw() * (j - i - 1))  # A is sentences [i, a), B the rest of the chunk
            first_span, second_span = (starts[i], starts[a]), (starts[a], starts[j])
        elif j < end:
            # One sentence reached the target alone: B is the sentence after it (which still
            # starts the next chunk), as BERT's walk does for an actual next sentence.
            first_span, second_span = (starts[i], starts[j]), (starts[j], starts[j + 1])
            if j + 1 == end:
                following = end  # B was the document's last sentence: nothing new is left
        elif i > first:
            # The document's last sentence is left alone: it follows the sentence before it, so
            # no text goes unused (BERT would draw a random B here).
            first_span, second_span = (starts[i - 1], starts[i]), (starts[i], starts[j])
        else:
            stats.dropped_pairs += 1  # a one-sentence document: nothing to put in order
            return
        if draw() < 0.5:
            out.extend((*second_span, *first_span, 1))
        else:
            out.extend((*first_span, *second_span, 0))
        i = following


# ---------------------------------------------------------------------------------------------
# Packed MLM-only sequences (RoBERTa)

@dataclass
class Packed:
    tokens: np.ndarray  # [CLS] content [SEP] per sequence, end to end
    offsets: np.ndarray  # int64 [n + 1]
    documents: np.ndarray  # int64 [n]: documents each sequence holds text of


def pack_sequences(window: Window, max_seq_length: int, special: SpecialIds, cross_document: bool = True) -> Packed:
    """Cut the window's text into `[CLS] content [SEP]` sequences of max_seq_length tokens.

    The text is every document's tokens in order with a `[SEP]` between two documents
    (cross_document) — the content of a sequence is max_seq_length - 2 consecutive tokens of it.
    A separator that would open a sequence, or stand right before its closing `[SEP]`, marks
    nothing and is left out (that sequence is then one token short). Without cross_document
    each document is cut alone and needs no separator.
    """
    capacity = max_seq_length - 2
    doc_token_starts = window.sentence_starts[window.document_starts]  # [num_documents + 1]
    n_tokens = len(window.tokens)
    if cross_document:
        boundaries = doc_token_starts[1:-1]  # where document d + 1 begins in the token array
        stream = np.insert(window.tokens, boundaries, special.sep)
        is_separator = np.zeros(len(stream), dtype=bool)
        is_separator[boundaries + np.arange(len(boundaries))] = True
        cuts = _cut(is_separator, 0, len(stream), capacity)
    else:
        stream = window.tokens
        is_separator = np.zeros(n_tokens, dtype=bool)
        cuts = [c for d in range(window.num_documents)
                for c in _cut(is_separator, int(doc_token_starts[d]), int(doc_token_starts[d + 1]), capacity)]
    if not cuts:
        empty = np.zeros(0, dtype=window.tokens.dtype)
        return Packed(empty, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    begin, stop = (np.array(c, dtype=np.int64) for c in zip(*cuts))
    lengths = stop - begin + 2
    offsets = _offsets(lengths)
    # One gather: position p of sequence k reads stream[begin[k] + p - 1], [CLS] and [SEP] from the end.
    source = np.concatenate([stream, np.array([special.cls, special.sep], dtype=stream.dtype)])
    sequence_of = np.repeat(np.arange(len(begin)), lengths)
    position = np.arange(int(offsets[-1])) - offsets[sequence_of]
    index = begin[sequence_of] + position - 1
    index[offsets[:-1]] = len(stream)  # [CLS]
    index[offsets[1:] - 1] = len(stream) + 1  # [SEP]
    separators_before = np.concatenate([[0], np.cumsum(is_separator)])
    documents = separators_before[stop] - separators_before[begin] + 1
    return Packed(source[index], offsets, documents.astype(np.int64))


def _cut(is_separator: np.ndarray, start: int, end: int, capacity: int) -> list[tuple[int, int]]:
    """(begin, end) spans of at most `capacity` tokens covering [start, end), never at a separator's edge."""
    cuts = []
    at = start
    while at < end:
        stop = min(at + capacity, end)
        if stop < end and stop - 1 > at and is_separator[stop - 1]:
            stop -= 1  # the separator would sit right before the closing [SEP]: it opens the next cut instead
        cuts.append((at, stop))
        at = stop
        if at < end and is_separator[at]:
            at += 1  # a sequence never opens with a separator
    return cuts


def packed_instances(window: Window, max_seq_length: int, cross_document: bool, dupe_factor: int,
                     special: SpecialIds, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """The window packed, every sequence dupe_factor times, shuffled: (tokens, offsets, documents summed over sequences).

    RoBERTa's static masking: each pass is the same sequences, to be masked differently.
    """
    packed = pack_sequences(window, max_seq_length, special, cross_document)
    n = len(packed.offsets) - 1
    order = rng.permutation(n * dupe_factor) % max(n, 1)
    tokens, offsets = take_sequences(packed.tokens, packed.offsets, order)
    return tokens, offsets, int(packed.documents.sum()) * dupe_factor


def take_sequences(tokens: np.ndarray, offsets: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequences `order[0], order[1], ...` of a ragged array (repeats allowed), end to end: (tokens, offsets)."""
    lengths = np.diff(offsets)[order]
    new_offsets = _offsets(lengths)
    sequence_of = np.repeat(np.arange(len(order)), lengths)
    index = offsets[order][sequence_of] + np.arange(int(new_offsets[-1])) - new_offsets[sequence_of]
    return tokens[index], new_offsets


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """[0, l0, l0 + l1, ...]: where each of the ragged rows starts, and the end."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
