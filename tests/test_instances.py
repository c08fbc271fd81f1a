"""Pairs and masks, rule by rule: known answers on hand-made documents with scripted draws, and
properties over random documents."""

from __future__ import annotations

import random
from array import array

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bertcli.instances import MaskingParams, SpecialIds, Window, mask_tokens, num_to_predict, sample_ranks
from bertcli.objectives.nsp import document_pairs, plan_pairs
from bertcli.objectives.pairs import PairStats, Pairs, assemble, truncate, truncation_cuts
from builders import window_of as window_of_documents

# bertcli's SentencePiece layout: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
SPECIAL = SpecialIds(cls=2, sep=3, mask=4)
CLS, SEP, MASK = SPECIAL.cls, SPECIAL.sep, SPECIAL.mask
NUM_SPECIAL = 5


def masking(prob, max_predictions, vocab_size, whole_word_mask=False, word_starts=None) -> MaskingParams:
    """Masking with every id from NUM_SPECIAL on as a random replacement."""
    return MaskingParams(prob, max_predictions, SPECIAL, np.arange(NUM_SPECIAL, vocab_size), whole_word_mask, word_starts)

# No example database: it would be written into the working directory.
cheap = settings(database=None)
costly = settings(max_examples=60, deadline=None, database=None)


class Script:
    """A stand-in for random.Random whose draws are given in advance; all must be used."""

    def __init__(self, *draws: float):
        self.draws = list(draws)

    def random(self) -> float:
        if not self.draws:
            raise AssertionError("the code drew more random numbers than the rule allows")
        return self.draws.pop(0)


def pairs_of(documents, max_num_tokens, script: Script, document=0, short_seq_prob=0.1):
    """Run one document's pass with scripted draws; return [(A, B, label, fallback)] and the stats."""
    window = window_of_documents(documents)
    out, stats = array("q"), PairStats()
    document_pairs(document, window.sentence_starts.tolist(), window.document_starts.tolist(), max_num_tokens,
                   short_seq_prob, script, out, stats)
    assert script.draws == [], "the rule should have used every scripted draw"
    rows = np.frombuffer(out, dtype=np.int64).reshape(-1, 6).tolist() if out else []
    tokens = window.tokens.tolist()
    return [(tokens[a0:a1], tokens[b0:b1], label, fallback) for a0, a1, b0, b1, label, fallback in rows], stats


# ---------------------------------------------------------------------------------------------
# Known answers: each rule of Google's create_instances_from_document

def test_actual_next_splits_the_chunk_at_a_uniform_point():
    doc = [[10, 11, 12], [13, 14], [15, 16, 17, 18]]
    # no short target; a_end = 1 + int(0.6 * 2) = 2 sentences; coin 0.7: actual next
    pairs, _ = pairs_of([doc, [[20]]], 20, Script(0.9, 0.6, 0.7))
    assert pairs == [([10, 11, 12, 13, 14], [15, 16, 17, 18], 0, 0)]


def test_short_target_is_drawn_once_per_document():
    doc = [[10], [11], [12], [13]]
    # short (0.05 < 0.1) with target 2 + int(0.0 * 19) = 2, kept for both chunks of the document
    pairs, _ = pairs_of([doc, [[20]]], 20, Script(0.05, 0.0, 0.3, 0.9, 0.3, 0.9))
    assert pairs == [([10], [11], 0, 0), ([12], [13], 0, 0)]


def test_chunk_walks_until_the_target_is_reached():
    doc = [[10, 11], [12, 13], [14, 15], [16, 17]]
    # target 4: two chunks of two sentences, each split in the middle
    pairs, _ = pairs_of([doc, [[20]]], 4, Script(0.9, 0.0, 0.9, 0.0, 0.9))
    assert pairs == [([10, 11], [12, 13], 0, 0), ([14, 15], [16, 17], 0, 0)]


def test_single_sentence_chunk_is_random_without_a_coin_and_b_fills_the_target():
    doc = [[10, 11, 12, 13, 14]]
    other = [[20, 21], [22, 23], [24, 25]]
    # no coin for a one-sentence chunk; other document 1 (int(0.7 * 2)); B starts at sentence 1
    # (int(0.4 * 3)) and takes sentences until it has target - len(A) = 8 - 5 = 3 tokens
    pairs, stats = pairs_of([doc, other], 8, Script(0.9, 0.7, 0.4))
    assert pairs == [([10, 11, 12, 13, 14], [22, 23, 24, 25], 1, 0)]
    assert stats == PairStats()


def test_random_b_puts_the_unused_sentences_back():
    doc = [[10, 11], [12, 13], [14, 15]]
    # a_end 1; coin 0.2: random; other doc 1; start 0. The unused [12, 13], [14, 15] start the next chunk.
    draws = (0.9, 0.1, 0.2, 0.9, 0.0) + (0.0, 0.9)
    pairs, _ = pairs_of([doc, [[20, 21, 22]]], 100, Script(*draws))
    assert pairs == [([10, 11], [20, 21, 22], 1, 0), ([12, 13], [14, 15], 0, 0)]


def test_random_document_gets_ten_tries():
    doc = [[10], [11]]
    nine_misses = (0.1,) * 9  # int(0.1 * 2) = 0, the current document
    # a_end 1, coin: random, nine misses then document 1; the put-back [11] is a chunk of its own
    draws = (0.9, 0.0, 0.2, *nine_misses, 0.9, 0.0) + (0.9, 0.0)
    pairs, _ = pairs_of([doc, [[20]]], 100, Script(*draws))
    assert pairs == [([10], [20], 1, 0), ([11], [20], 1, 0)]


def test_ten_misses_fall_back_to_the_actual_next_and_say_so():
    doc = [[10], [11], [12]]
    # a_end 1 + int(0.9 * 2) = 2; coin: random; ten draws of the current document
    pairs, stats = pairs_of([doc, [[20]]], 100, Script(0.9, 0.9, 0.2, *(0.1,) * 10))
    assert pairs == [([10, 11], [12], 0, 1)]
    assert stats.dropped_pairs == 0


def test_lone_sentence_falls_back_to_its_successor_and_is_dropped_at_the_end():
    # One document: no other to draw. The first sentence reaches the target alone.
    doc = [[10, 11, 12], [13, 14, 15]]
    pairs, stats = pairs_of([doc], 3, Script(0.9, *(0.5,) * 10, *(0.5,) * 10))
    assert pairs == [([10, 11, 12], [13, 14, 15], 0, 1)]
    assert stats.dropped_pairs == 1


def test_empty_sentences_and_documents_are_dropped():
    window = window_of_documents([[[1 + NUM_SPECIAL], [], [2 + NUM_SPECIAL]], [[]], [[3 + NUM_SPECIAL]]])
    assert window.num_documents == 2 and window.num_sentences == 3
    assert window.sentences_per_document().tolist() == [2, 1]


# ---------------------------------------------------------------------------------------------
# Truncation

def google_truncation(len_a: int, len_b: int, max_num_tokens: int) -> tuple[int, int]:
    """Google's truncate_seq_pair loop, counting which side loses each token."""
    cut_a = cut_b = 0
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a, cut_a = len_a - 1, cut_a + 1
        else:
            len_b, cut_b = len_b - 1, cut_b + 1
    return cut_a, cut_b


@cheap
@given(st.integers(1, 600), st.integers(1, 600), st.integers(5, 509))
def test_truncation_cuts_match_googles_loop(len_a, len_b, max_num_tokens):
    cut_a, cut_b = truncation_cuts(len_a, len_b, max_num_tokens)
    assert (int(cut_a), int(cut_b)) == google_truncation(len_a, len_b, max_num_tokens)


def test_truncation_takes_the_longer_side_b_on_a_tie():
    assert [tuple(map(int, truncation_cuts(a, b, 8))) for a, b in [(6, 3), (3, 6), (5, 5), (4, 4), (9, 1)]] == \
        [(1, 0), (0, 1), (1, 1), (0, 0), (2, 0)]


def test_truncation_cuts_front_or_back_with_even_odds():
    n = 4000
    pairs = Pairs(np.full(n, 100), np.full(n, 50), np.full(n, 1000), np.full(n, 10), np.zeros(n, np.uint8),
                  np.zeros(n, np.uint8))
    cut = truncate(pairs, 40, np.random.default_rng(0))
    assert (cut.a_length == 30).all() and (cut.b_length == 10).all()
    front = cut.a_start - 100
    assert front.min() >= 0 and (front + 30 <= 50).all()  # the kept run lies inside the original
    assert abs(front.mean() - 10) < 0.2  # Binomial(20, 1/2) tokens from the front


# ---------------------------------------------------------------------------------------------
# Properties of whole windows

documents_strategy = st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=8), min_size=1, max_size=8)


def window_of(sentence_lengths: list[list[int]]) -> tuple[Window, np.ndarray]:
    """A window whose token k is NUM_SPECIAL + k (so a token says where it came from), and each
    token's document."""
    docs, k = [], NUM_SPECIAL
    for lengths in sentence_lengths:
        docs.append([list(range(k + sum(lengths[:i]), k + sum(lengths[:i + 1]))) for i in range(len(lengths))])
        k += sum(lengths)
    window = window_of_documents(docs)
    document_of = np.repeat(np.arange(len(docs)), [sum(l) for l in sentence_lengths])
    return window, document_of


@costly
@given(documents_strategy, st.integers(8, 64), st.sampled_from([0.0, 0.1, 0.9]), st.integers(0, 2**32 - 1))
def test_pairs_come_from_where_their_label_says(sentence_lengths, max_seq_length, short_seq_prob, seed):
    window, document_of = window_of(sentence_lengths)
    pairs, stats = plan_pairs(window, max_seq_length - 3, short_seq_prob, 2, random.Random(seed))
    assert (pairs.a_length >= 1).all() and (pairs.b_length >= 1).all()
    a_doc, b_doc = document_of[pairs.a_start], document_of[pairs.b_start]
    assert (document_of[pairs.a_start + pairs.a_length - 1] == a_doc).all()  # A is one document's run
    assert (document_of[pairs.b_start + pairs.b_length - 1] == b_doc).all()
    random_next = pairs.is_random_next == 1
    assert (a_doc[random_next] != b_doc[random_next]).all()  # never "random" from the same document
    actual = ~random_next  # the actual next: B starts where A ends
    assert (pairs.b_start[actual] == pairs.a_start[actual] + pairs.a_length[actual]).all()
    assert stats.fallback_pairs == int(pairs.fallback.sum())
    assert not (pairs.fallback.astype(bool) & random_next).any()
    if len(sentence_lengths) == 1:
        assert not random_next.any()


@costly
@given(documents_strategy, st.integers(8, 64), st.floats(0.05, 0.5), st.integers(1, 30), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_instances_fit_and_masks_follow_the_rules(sentence_lengths, max_seq_length, masked_lm_prob, max_predictions,
                                                  whole_word, seed):
    window, _ = window_of(sentence_lengths)
    rng = np.random.default_rng(seed)
    pairs, _ = plan_pairs(window, max_seq_length - 3, 0.1, 2, random.Random(seed))
    pairs = truncate(pairs, max_seq_length - 3, rng)
    tokens, offsets, b_start = assemble(window, pairs, SPECIAL)
    vocab_size = NUM_SPECIAL + int(window.tokens.max(initial=NUM_SPECIAL)) + 1
    word_starts = np.arange(vocab_size) % 3 != 1  # every third id continues a word
    params = masking(masked_lm_prob, max_predictions, vocab_size, whole_word, word_starts)
    masked = mask_tokens(tokens, offsets, params, rng)

    lengths = np.diff(offsets)
    assert (lengths <= max_seq_length).all()
    assert (b_start >= 2).all() and (lengths - b_start >= 2).all()  # A and B never empty
    assert (tokens[offsets[:-1]] == CLS).all() and (tokens[offsets[:-1] + b_start - 1] == SEP).all()
    assert (tokens[offsets[1:] - 1] == SEP).all()
    assert set(np.unique(tokens[np.isin(tokens, [CLS, SEP])])) <= {CLS, SEP}
    assert ((tokens == CLS) | (tokens == SEP)).sum() == 3 * len(pairs)

    instance = np.repeat(np.arange(len(pairs)), masked.counts)
    where = offsets[instance] + masked.positions
    assert (masked.positions < lengths[instance]).all()
    assert not np.isin(tokens[where], [CLS, SEP]).any()  # [CLS]/[SEP] are never masked
    assert (masked.original_ids == tokens[where]).all()  # labels are the original tokens
    for i in range(len(pairs)):  # positions ascending within each instance
        p = masked.positions[instance == i]
        assert (np.diff(p) > 0).all()
    unmasked = np.ones(len(tokens), dtype=bool)
    unmasked[where] = False
    assert (masked.input_ids[unmasked] == tokens[unmasked]).all()
    quota = num_to_predict(lengths, params)
    if whole_word:
        assert (masked.counts <= quota).all()
    else:
        assert (masked.counts == np.minimum(quota, lengths - 3)).all()


# ---------------------------------------------------------------------------------------------
# Masking

@cheap
@given(st.integers(1, 600), st.floats(0.001, 0.999), st.integers(1, 100))
def test_num_to_predict_counts_as_google(length, prob, max_predictions):
    params = masking(prob, max_predictions, 100)
    expected = min(max_predictions, max(1, int(round(length * prob))))
    assert int(num_to_predict(np.array([length]), params)[0]) == expected


def test_num_to_predict_known_values():
    params = masking(0.15, 20, 100)
    # 128 * 0.15 = 19.2 -> 19; 30 * 0.15 = 4.5 -> 4 (half to even, as Python's round); 5 -> 1; 300 -> capped 20
    assert num_to_predict(np.array([128, 30, 5, 300, 10]), params).tolist() == [19, 4, 1, 20, 2]


def test_eighty_ten_ten_with_non_special_random_tokens():
    n, length = 4000, 100
    tokens = np.tile(np.r_[CLS, np.full(length - 2, 7), SEP], n)
    offsets = np.arange(n + 1) * length
    params = masking(0.15, 20, 12)
    masked = mask_tokens(tokens, offsets, params, np.random.default_rng(1))
    assert (masked.counts == 15).all()
    new = masked.input_ids[offsets[np.repeat(np.arange(n), masked.counts)] + masked.positions]
    share_mask, share_kept = (new == MASK).mean(), (new == 7).mean()
    assert abs(share_mask - 0.8) < 0.01
    replaced = new[(new != MASK) & (new != 7)]
    assert replaced.min() >= NUM_SPECIAL and replaced.max() < 12  # never a special token
    # kept: the 10% "keep" plus random draws that hit 7 again (1 in 7 of the other 10%)
    assert abs(share_kept - (0.1 + 0.1 / 7)) < 0.01


def test_masked_positions_are_a_uniform_choice():
    n, length = 20000, 12
    tokens = np.tile(np.r_[CLS, np.arange(10) + NUM_SPECIAL, SEP], n)
    offsets = np.arange(n + 1) * length
    masked = mask_tokens(tokens, offsets, masking(0.25, 20, 100), np.random.default_rng(2))
    assert (masked.counts == 3).all()  # round(12 * 0.25) = 3
    hits = np.bincount(masked.positions, minlength=length)
    assert hits[0] == 0 and hits[-1] == 0
    assert np.allclose(hits[1:-1] / (3 * n), 0.1, atol=0.01)


@cheap
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=20), st.integers(0, 999))
def test_sample_ranks_draws_distinct_ranks(rows, seed):
    population = np.array([max(p, s) for p, s in rows])
    size = np.array([min(p, s) for p, s in rows])
    picked = sample_ranks(population, size, np.random.default_rng(seed))
    for row, p, s in zip(picked, population, size):
        chosen = row[row >= 0]
        assert len(chosen) == s and len(set(chosen.tolist())) == s and (chosen < p).all()


def test_whole_word_masks_whole_words_and_skips_one_too_long():
    # ids 5..9 start words, 10..14 continue one. One word of 9 pieces, then 3 one-piece words.
    word_starts = np.arange(15) < 10
    words = [np.r_[5, np.full(8, 10)], [6], [7], [8]]
    tokens = np.r_[CLS, np.concatenate(words), SEP, 9, SEP]
    n = 500
    batch = np.tile(tokens, n)
    offsets = np.arange(n + 1) * len(tokens)
    params = masking(0.1, 20, 15, whole_word_mask=True, word_starts=word_starts)
    masked = mask_tokens(batch, offsets, params, np.random.default_rng(3))
    # quota round(16 * 0.1) = 2: the 9-piece word never fits, so two of the four short words fill it
    assert (masked.counts == 2).all()
    assert not np.isin(masked.original_ids, [5, 10]).any()


def test_whole_word_groups_end_at_segment_boundaries():
    word_starts = np.arange(15) < 10
    tokens = np.array([CLS, 5, 10, 10, SEP, 11, 11, SEP])  # B starts with continuation pieces
    offsets = np.array([0, len(tokens)])
    params = masking(0.5, 20, 15, whole_word_mask=True, word_starts=word_starts)
    for seed in range(20):
        masked = mask_tokens(tokens, offsets, params, np.random.default_rng(seed))
        chosen = set(masked.positions.tolist())
        assert chosen in ({1, 2, 3}, {5, 6})  # quota 4: one group; the groups are [1-3] and [5-6]


def test_masking_is_reproducible_from_the_generator():
    tokens = np.tile(np.r_[CLS, np.arange(30) + NUM_SPECIAL, SEP], 50)
    offsets = np.arange(51) * 32
    params = masking(0.15, 20, 100)
    a = mask_tokens(tokens, offsets, params, np.random.default_rng(5))
    b = mask_tokens(tokens, offsets, params, np.random.default_rng(5))
    assert (a.input_ids == b.input_ids).all() and (a.positions == b.positions).all()


def test_a_window_without_tokens_makes_no_instances():
    window = window_of_documents([[[], []]])
    pairs, stats = plan_pairs(window, 29, 0.1, 3, random.Random(0))
    rng = np.random.default_rng(0)
    tokens, offsets, b_start = assemble(window, truncate(pairs, 29, rng), SPECIAL)
    masked = mask_tokens(tokens, offsets, masking(0.15, 5, 100), rng)
    assert len(pairs) == 0 and len(tokens) == 0 and offsets.tolist() == [0] and len(masked.positions) == 0
    assert stats == PairStats()
