"""ALBERT's sentence-order prediction: A and B are consecutive segments of one document, in their
order (label 0) or swapped (label 1) with probability 1/2.

Target length, the short-sequence rule, the chunk walk and truncation are BERT's (pairs.py);
only where B comes from differs, so the task cannot be solved by topic alone.
"""

from __future__ import annotations

import random
from array import array
from functools import partial

import numpy as np

from bertcli.errors import UsageError
from bertcli.instances import Window
from bertcli.objectives.pairs import Pairs, PairStats, columns_of, pair_instances, walk_document


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
    columns = columns_of(out, 5)
    swapped = columns[4].astype(np.uint8)
    pairs = Pairs(columns[0].copy(), columns[1] - columns[0], columns[2].copy(), columns[3] - columns[2],
                  swapped, np.zeros(len(swapped), dtype=np.uint8))
    stats.random_next, stats.actual_next = 0, len(pairs)
    return pairs, stats


def document_sop_pairs(starts: list[int], first: int, end: int, max_num_tokens: int, short_seq_prob: float,
                       rng: random.Random, out: array, stats: PairStats) -> None:
    """Sentences [first, end) of one document, one pass; B is always A's continuation."""
    draw = rng.random

    def take_chunk(i: int, j: int, target: int) -> int:
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
            return end
        if draw() < 0.5:
            out.extend((*second_span, *first_span, 1))
        else:
            out.extend((*first_span, *second_span, 0))
        return following

    walk_document(starts, first, end, max_num_tokens, short_seq_prob, draw, take_chunk)


build = partial(pair_instances, plan_sop_pairs)


def summarize(stats: dict, counters: dict, instances: int) -> dict:
    """Label 1 is "swapped"; B never comes from another document, so nothing falls back."""
    stats = {"swapped_fraction": stats.pop("random_next_fraction"), **stats}
    del stats["fallback_pairs"]
    return stats


def check_data(train: dict, names: str) -> None:
    """Refuse a corpus whose documents are mostly one sentence: such a document gives no pair."""
    single = train["stats"].get("single_sentence_documents", 0)
    if single > 0.5 * train["documents"]:
        # Most likely a blank line after every sentence.
        raise UsageError(f"--objective sop needs documents of several sentences, but {single} of {train['documents']} "
                         f"documents of {names} have one (is there a blank line after every sentence?); fix the "
                         "blank lines or use --objective mlm")
