"""Objectives: sentence-order pairs, packed MLM-only sequences, masking rates, and nsp left unchanged."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bertcli.errors import UsageError
from bertcli.instances import MaskingParams, Window, mask_tokens
from bertcli.make_data import MakeDataOptions, build_window, make_data
from bertcli.objectives import get_objective
from bertcli.objectives.mlm import pack_sequences, take_sequences
from bertcli.objectives.pairs import assemble, truncate
from bertcli.objectives.sop import plan_sop_pairs
from bertcli.shards import PretrainingData, token_dtype, write_shard
from conftest import SAMPLE, run_cli
from objective_fixtures import NUM_SPECIAL, SPECIAL, PieceTokenizer, documents
from builders import window_of

CLS, SEP, MASK = SPECIAL.cls, SPECIAL.sep, SPECIAL.mask

GOLDEN = json.loads((Path(__file__).parent / "golden" / "nsp_shards.json").read_text())


def numbered_window(sentence_counts: list[int], sentence_length: int = 5) -> Window:
    """Document d's sentence k is tokens 1000 + 100·d + 10·k + t: every token says where it came from."""
    return window_of([[[1000 + 100 * d + 10 * k + t for t in range(sentence_length)] for k in range(n)]
                                  for d, n in enumerate(sentence_counts)])


def origin(token: int) -> tuple[int, int]:
    """(document, sentence) of a token of `numbered_window`."""
    return (token - 1000) // 100, (token - 1000) % 100 // 10


# ---------------------------------------------------------------------------------------------
# Sentence order

def test_sop_pairs_are_consecutive_segments_of_one_document_in_the_order_their_label_says():
    window = numbered_window([6, 3, 9, 2, 4])
    pairs, stats = plan_sop_pairs(window, max_num_tokens=20, short_seq_prob=0.2, dupe_factor=20, rng=random.Random(3))
    tokens, offsets, b_start = assemble(window, truncate(pairs, 20, np.random.default_rng(0)), SPECIAL)
    for i in range(len(pairs)):
        seq = tokens[offsets[i]:offsets[i + 1]].tolist()
        a, b = seq[1:b_start[i] - 1], seq[b_start[i]:-1]
        assert seq[0] == CLS and seq[b_start[i] - 1] == SEP and seq[-1] == SEP and a and b
        assert len({origin(t)[0] for t in a + b}) == 1  # one document
        first, second = (b, a) if pairs.is_random_next[i] else (a, b)
        # the first segment's last sentence is followed directly by the second's first sentence
        assert origin(first[-1])[1] + 1 == origin(second[0])[1]
    swapped = pairs.is_random_next.mean()
    assert 0.4 < swapped < 0.6 and not pairs.fallback.any()
    assert stats.random_next == 0 and stats.dropped_pairs == 0


def test_sop_untruncated_segments_cover_the_chunk_exactly():
    # 3 sentences of 5 tokens, target 61: the whole document is one chunk, split after sentence 1 or 2
    window = numbered_window([3])
    pairs, _ = plan_sop_pairs(window, max_num_tokens=61, short_seq_prob=0.0, dupe_factor=40, rng=random.Random(0))
    assert len(pairs) == 40
    for i in range(len(pairs)):
        spans = sorted([(pairs.a_start[i], pairs.a_length[i]), (pairs.b_start[i], pairs.b_length[i])])
        assert spans[0][0] == 0 and spans[0][0] + spans[0][1] == spans[1][0] and spans[1][0] + spans[1][1] == 15
        assert spans[0][1] in (5, 10)
        in_order = pairs.a_start[i] == 0
        assert pairs.is_random_next[i] == (0 if in_order else 1)
    assert set(pairs.is_random_next.tolist()) == {0, 1}


def test_sop_drops_one_sentence_documents_and_pairs_a_lone_last_sentence_with_the_one_before():
    tail = numbered_window([5])  # chunks of 4 sentences at target 20: sentence 4 is left alone
    pairs, stats = plan_sop_pairs(tail, max_num_tokens=20, short_seq_prob=0.0, dupe_factor=1, rng=random.Random(1))
    assert stats.dropped_pairs == 0 and len(pairs) == 2
    assert sorted(zip(pairs.a_start.tolist(), pairs.b_start.tolist()))[-1] in ((15, 20), (20, 15))
    window = numbered_window([1, 4, 1])
    pairs, stats = plan_sop_pairs(window, max_num_tokens=61, short_seq_prob=0.0, dupe_factor=3, rng=random.Random(1))
    assert stats.dropped_pairs == 2 * 3  # the two one-sentence documents, every pass
    assert len(pairs) == 3 and {origin(int(window.tokens[s]))[0] for s in pairs.a_start} == {1}


def test_sop_one_long_sentence_pairs_with_its_successor():
    # target 8 is reached by one 5-token sentence alone; B is the next sentence
    window = numbered_window([3])
    pairs, stats = plan_sop_pairs(window, max_num_tokens=4, short_seq_prob=0.0, dupe_factor=1, rng=random.Random(2))
    firsts = sorted(min(a, b) for a, b in zip(pairs.a_start, pairs.b_start))
    assert firsts == [0, 5] and stats.dropped_pairs == 0 and stats.long_sentences == 3


# ---------------------------------------------------------------------------------------------
# Packing

def contents(packed) -> list[list[int]]:
    out = []
    for i in range(len(packed.offsets) - 1):
        seq = packed.tokens[packed.offsets[i]:packed.offsets[i + 1]].tolist()
        assert seq[0] == CLS and seq[-1] == SEP
        out.append(seq[1:-1])
    return out


@pytest.mark.parametrize("counts,length", [([6, 3, 9, 2, 4], 16), ([1, 1, 1], 8), ([2, 2], 12), ([5, 7, 1, 3], 22)])
def test_packing_fills_every_sequence_and_marks_document_boundaries(counts, length):
    window = numbered_window(counts)
    packed = pack_sequences(window, length, SPECIAL, cross_document=True)
    seqs = contents(packed)
    lengths = np.diff(packed.offsets)
    # full except the last one, and except where a boundary separator would stand before the closing [SEP]
    assert lengths.max() <= length
    assert all(n in (length, length - 1) for n in lengths[:-1])
    flat = [t for seq in seqs for t in seq]
    # every token of the window once, in order; [SEP] exactly between two documents
    assert [t for t in flat if t != SEP] == window.tokens.tolist()
    for seq in seqs:
        assert seq[0] != SEP and seq[-1] != SEP
        for k, t in enumerate(seq):
            if t == SEP:
                assert origin(seq[k - 1])[0] + 1 == origin(seq[k + 1])[0]
        docs = [origin(t)[0] for t in seq if t != SEP]
        assert all(x <= y for x, y in zip(docs, docs[1:]))
        assert sum(x != y for x, y in zip(docs, docs[1:])) == seq.count(SEP)  # a boundary inside is always marked
    assert packed.documents.tolist() == [len({origin(t)[0] for t in seq if t != SEP}) for seq in seqs]


def test_packing_without_crossing_keeps_each_document_alone():
    window = numbered_window([6, 3, 9])
    packed = pack_sequences(window, 12, SPECIAL, cross_document=False)
    seqs = contents(packed)
    assert all(SEP not in seq and len({origin(t)[0] for t in seq}) == 1 for seq in seqs)
    assert [t for seq in seqs for t in seq] == window.tokens.tolist()
    assert [len(s) for s in seqs] == [10, 10, 10, 10, 5, 10, 10, 10, 10, 5]
    assert packed.documents.tolist() == [1] * len(seqs)


def test_take_sequences_repeats_and_reorders():
    tokens, offsets = np.arange(10), np.array([0, 3, 4, 10])
    out, out_offsets = take_sequences(tokens, offsets, np.array([2, 0, 0]))
    assert out.tolist() == [4, 5, 6, 7, 8, 9, 0, 1, 2, 0, 1, 2] and out_offsets.tolist() == [0, 6, 9, 12]


# ---------------------------------------------------------------------------------------------
# Windows → instances (make-data's unit of work)

def build(objective: str, **options):
    opts = MakeDataOptions(objective=objective, max_seq_length=64, dupe_factor=2, **options).resolve()
    tok = PieceTokenizer()
    return build_window("train", 3, documents(120), opts, tok)


@pytest.mark.parametrize("name,options", [("default", {}), ("whole_word", {"whole_word_mask": True}),
                                          ("short", {"short_seq_prob": 0.5, "masked_lm_prob": 0.2})])
def test_nsp_shards_are_byte_identical_to_those_before_objectives(name, options):
    opts = MakeDataOptions(max_seq_length=64, dupe_factor=2, **options).resolve()
    tok = PieceTokenizer()
    result = build_window("train", 3, documents(), opts, tok)
    with tempfile.TemporaryDirectory() as d:
        sha = write_shard(Path(d) / "s.safetensors", result.examples, token_dtype(tok.vocab_size),
                          {"split": "train", "shard": "0", "tokenizer_sha256": tok.sha256})
    assert sha == GOLDEN["build_window"][name]


def test_mlm_instances_are_packed_unpaired_and_segment_zero():
    result = build("mlm")
    ex = result.examples
    lengths = np.diff(ex.offsets)
    assert (ex.segment_b_start == lengths).all() and not ex.next_sentence_labels.any()
    assert (lengths == 64).mean() > 0.95
    # each packed sequence appears dupe_factor times, masked differently
    originals = {}
    for i in range(len(ex)):
        originals.setdefault(ex[i].original_ids().tobytes(), []).append(ex[i].masked_positions.tobytes())
    assert set(map(len, originals.values())) == {2}
    assert sum(a != b for a, b in originals.values()) > 0.9 * len(originals)


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_masking_rate_and_split_statistics(rate):
    ex = build("mlm", masked_lm_prob=rate).examples
    assert ex.num_masked / ex.num_tokens == pytest.approx(rate, abs=0.01)
    assert MakeDataOptions(masked_lm_prob=rate).resolve().max_predictions == int(np.ceil(128 * rate - 1e-9))
    at = np.concatenate([ex.offsets[i] + ex.masked_positions[ex.masked_offsets[i]:ex.masked_offsets[i + 1]]
                         for i in range(len(ex))])
    shown = ex.input_ids[at].astype(np.int64)
    original = ex.masked_ids.astype(np.int64)
    as_mask, kept = (shown == MASK).mean(), (shown == original).mean()
    assert as_mask == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1, abs=0.02)
    assert (~((shown == MASK) | (shown == original))).mean() == pytest.approx(0.1, abs=0.02)


def test_mask_split_all_mask():
    ex = build("sop", masked_lm_prob=0.3, mask_replace_prob=1.0, random_replace_prob=0.0).examples
    at = np.concatenate([ex.offsets[i] + ex.masked_positions[ex.masked_offsets[i]:ex.masked_offsets[i + 1]]
                         for i in range(len(ex))])
    assert (ex.input_ids[at] == MASK).all()


def test_mask_tokens_default_split_is_unchanged_by_the_new_fields():
    tokens = np.tile(np.arange(5, 400, dtype=np.int64), 20)
    offsets = np.arange(0, len(tokens) + 1, 79)
    pool = np.arange(NUM_SPECIAL, 500)
    old = mask_tokens(tokens, offsets, MaskingParams(0.15, 20, SPECIAL, pool), np.random.default_rng(1))
    new = mask_tokens(tokens, offsets, MaskingParams(0.15, 20, SPECIAL, pool, False, None, 0.8, 0.1), np.random.default_rng(1))
    assert (old.input_ids == new.input_ids).all()


# ---------------------------------------------------------------------------------------------
# make-data end to end

def make(out: Path, tokenizer_dir: Path, objective: str, **options) -> dict:
    opts = MakeDataOptions(objective=objective, max_seq_length=64, dupe_factor=2, validation_fraction=0.05, workers=1,
                           shard_size=2000, **options)
    return make_data([SAMPLE], tokenizer_dir, out, opts, show_progress=False)


def test_default_make_data_shards_match_those_before_objectives(data_dir, tokenizer_dir):
    from bertcli.tokenizer import Tokenizer

    golden = GOLDEN["make_data"]
    if Tokenizer.load(tokenizer_dir).sha256 != golden["tokenizer_sha256"]:
        pytest.skip("this SentencePiece build trains another tokenizer than the one the golden shards were made with")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    for split in ("train", "validation"):
        assert [s["sha256"] for s in manifest["splits"][split]["shards"]] == golden[split]
    assert manifest["options"]["objective"] == "nsp"


def test_mlm_data_has_next_to_no_padding_and_reports_its_stats(tmp_path, tokenizer_dir):
    m = make(tmp_path / "mlm", tokenizer_dir, "mlm")
    stats = m["splits"]["train"]["stats"]
    assert m["options"]["objective"] == "mlm" and m["options"]["short_seq_prob"] is None
    assert stats["padding_fraction"] < 0.005
    assert 1.0 < stats["documents_per_sequence"] < 2.0
    assert "random_next_fraction" not in stats and "fallback_pairs" not in stats
    data = PretrainingData(tmp_path / "mlm", "train")
    lengths = [len(data[i].input_ids) for i in range(len(data))]
    assert sum(n < 64 for n in lengths) <= 2 * 2 + 4  # the window's last sequence (per pass), a few separator cuts

    docs = make(tmp_path / "doc", tokenizer_dir, "mlm", cross_document=False)["splits"]["train"]["stats"]
    assert docs["documents_per_sequence"] == 1.0 and docs["padding_fraction"] > stats["padding_fraction"]


def test_sop_data_reports_the_swapped_share(tmp_path, tokenizer_dir):
    m = make(tmp_path / "sop", tokenizer_dir, "sop")
    stats = m["splits"]["train"]["stats"]
    assert m["options"]["objective"] == "sop" and 0.45 < stats["swapped_fraction"] < 0.55
    assert "random_next_fraction" not in stats
    data = PretrainingData(tmp_path / "sop", "train")
    assert np.mean([data[i].next_sentence_label for i in range(len(data))]) == pytest.approx(stats["swapped_fraction"])


def test_objective_descriptions():
    assert get_objective("nsp").sentence_metric == "next_sentence" and get_objective(None).name == "nsp"
    assert get_objective("sop").sentence_metric == "sentence_order" and get_objective("sop").has_sentence_task
    assert not get_objective("mlm").has_sentence_task
    with pytest.raises(UsageError):
        get_objective("electra")


# ---------------------------------------------------------------------------------------------
# Bad combinations: one line, exit 2

@pytest.mark.parametrize("args,expected", [
    (["--objective", "mlm", "--short-seq-prob", "0.1"], "--short-seq-prob has no meaning with --objective mlm"),
    (["--no-cross-document"], "--no-cross-document applies to --objective mlm only"),
    (["--objective", "electra"], "--objective 'electra' must be one of nsp, sop, mlm"),
    (["--masked-lm-prob", "0.55"], "--masked-lm-prob 0.55 is out of range: give a number from 0.05 to 0.5"),
    (["--mask-replace-prob", "0.95", "--random-replace-prob", "0.1"], "add up to at most 1"),
])
def test_bad_combinations_are_one_line_and_exit_2(tmp_path, tokenizer_dir, cli, args, expected):
    code, _, err = cli("make-data", SAMPLE, "-t", tokenizer_dir, "-o", tmp_path / "out", *args)
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_sop_on_single_sentence_documents_is_refused(tmp_path, tokenizer_dir):
    lines = SAMPLE.read_text(encoding="utf-8").split("\n")[:400]
    corpus = tmp_path / "blank.txt"
    corpus.write_text("\n\n".join(line for line in lines if line.strip()) + "\n", encoding="utf-8")
    proc = run_cli("make-data", corpus, "-t", tokenizer_dir, "-o", tmp_path / "out", "--objective", "sop", "--workers", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--objective sop needs documents of several sentences" in proc.stderr
    assert not (tmp_path / "out").exists()
    ok = run_cli("make-data", corpus, "-t", tokenizer_dir, "-o", tmp_path / "mlm", "--objective", "mlm", "--workers", "1")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("crafted", ["electra", ["mlm"], None])
def test_a_crafted_objective_in_the_manifest_is_one_line(tmp_path, data_dir, cli, crafted):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["options"]["objective"] = crafted
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli("show-data", copy, "--json")
    assert code == 1 and "options.objective" in err and "Traceback" not in err
