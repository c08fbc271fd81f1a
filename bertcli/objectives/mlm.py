"""RoBERTa's MLM-only sequences (FULL-SENTENCES / DOC-SENTENCES): no pairs, no sentence task.

The window's sentences are laid end to end, with a `[SEP]` between documents, and cut into
`[CLS] ... [SEP]` sequences of exactly max_seq_length tokens: the sentence at a cut continues in
the next sequence, so only the last sequence is short. With `cross_document=False` every
document is packed alone (its last sequence is short). Segment ids are all 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertcli.instances import SpecialIds, Window, offsets_of
from bertcli.objectives.pairs import Built


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
    offsets = offsets_of(lengths)
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
    new_offsets = offsets_of(lengths)
    sequence_of = np.repeat(np.arange(len(order)), lengths)
    index = offsets[order][sequence_of] + np.arange(int(new_offsets[-1])) - new_offsets[sequence_of]
    return tokens[index], new_offsets



def build(window: Window, opts, special: SpecialIds, seed: list[int], rng: np.random.Generator) -> Built:
    """The window packed dupe_factor times and shuffled; segment B starts at the end (there is none)."""
    tokens, offsets, sequence_documents = packed_instances(window, opts.max_seq_length, opts.cross_document,
                                                           opts.dupe_factor, special, rng)
    no_label = np.zeros(len(offsets) - 1, dtype=np.uint8)
    return Built(tokens, offsets, np.diff(offsets).astype(np.int32), no_label, no_label,
                 {"dropped_pairs": 0, "long_sentences": 0, "sequence_documents": sequence_documents})


def summarize(stats: dict, counters: dict, instances: int) -> dict:
    """No pairs: how full and how mixed the packed sequences are."""
    for key in ("random_next_fraction", "fallback_pairs", "dropped_pairs", "long_sentences"):
        del stats[key]
    per_sequence = counters.get("sequence_documents", 0) / instances if instances else 0.0
    return {"documents_per_sequence": per_sequence, **stats}


def check_data(train: dict, names: str) -> None:
    """Nothing to refuse: any text packs into sequences."""
