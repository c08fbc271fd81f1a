"""BERT's next-sentence prediction: pairs whose B is A's actual continuation (label 0) or, with
probability 1/2, sentences of another document (label 1).

Google's `create_instances_from_document` on spans of the window's tokens, with one fix: a pair
is labelled "random next" only when B really comes from another document. If the 10 tries draw
only the current document, the pair falls back to the actual next sentences (label 0) and is
counted; a one-sentence chunk with nothing after it is dropped and counted. Uniform integers are
`int(random() * n)`, as exact as Python floats allow and several times cheaper than `randint`.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from functools import partial

import numpy as np

from bertcli.instances import Window
from bertcli.objectives.pairs import Pairs, PairStats, columns_of, pair_instances, walk_document

RANDOM_DOC_TRIES = 10


def plan_pairs(window: Window, max_num_tokens: int, short_seq_prob: float, dupe_factor: int,
               rng: random.Random) -> tuple[Pairs, PairStats]:
    """Every pass over every document of the window, in order, untruncated (see `pairs.truncate`)."""
    starts = window.sentence_starts.tolist()
    document_starts = window.document_starts.tolist()
    out = array("q")  # per pair: a_start, a_end, b_start, b_end, is_random_next, fallback
    stats = PairStats(long_sentences=int((np.diff(window.sentence_starts) > max_num_tokens).sum()))
    for _ in range(dupe_factor):
        for d in range(window.num_documents):
            document_pairs(d, starts, document_starts, max_num_tokens, short_seq_prob, rng, out, stats)
    columns = columns_of(out, 6)
    pairs = Pairs(columns[0].copy(), columns[1] - columns[0], columns[2].copy(), columns[3] - columns[2],
                  columns[4].astype(np.uint8), columns[5].astype(np.uint8))
    stats.random_next = int(pairs.is_random_next.sum())
    stats.actual_next = len(pairs) - stats.random_next
    stats.fallback_pairs = int(pairs.fallback.sum())
    return pairs, stats


def document_pairs(d: int, starts: list[int], document_starts: list[int], max_num_tokens: int,
                   short_seq_prob: float, rng: random.Random, out: array, stats: PairStats) -> None:
    """One document's pairs for one pass: appends (a_start, a_end, b_start, b_end, is_random_next,
    fallback) per pair to `out`. `starts` are sentence token offsets, `document_starts` document
    sentence offsets."""
    draw = rng.random
    num_documents = len(document_starts) - 1
    end = document_starts[d + 1]

    def take_chunk(i: int, j: int, target: int) -> int:
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
                return a  # put back: the chunk's unused sentences start the next chunk
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
        return j

    walk_document(starts, document_starts[d], end, max_num_tokens, short_seq_prob, draw, take_chunk)


def _other_document(d: int, num_documents: int, draw) -> int:
    """Google's up-to-10 tries for a document other than d; -1 when every try drew d."""
    for _ in range(RANDOM_DOC_TRIES):
        other = int(draw() * num_documents)
        if other != d:
            return other
    return -1


build = partial(pair_instances, plan_pairs)


def summarize(stats: dict, counters: dict, instances: int) -> dict:
    """The manifest's pair stats as they are: random_next_fraction, fallback_pairs, dropped_pairs, ..."""
    return stats


def check_data(train: dict, names: str) -> None:
    """Nothing to refuse: a corpus of few documents gets warnings (make_data/diagnostics.py), not an error."""
