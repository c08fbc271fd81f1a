"""WordPiece tokenizers: training, adopting published vocabularies, [unused] slots, whole-word masking.

Google's and Hugging Face's BERT tokenizers are the reference: they must read the vocab.txt bertcli
writes and give bertcli's ids.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from bertcli.instances import MaskingParams, mask_tokens  # noqa: E402
from bertcli.tokenizer import Tokenizer, TrainOptions, adopt, train  # noqa: E402
from bertcli.tokenizer.wordpiece import WordPieceTokenizer, wordpiece_options  # noqa: E402
from bertcli.corpus import Corpus  # noqa: E402
from conftest import SAMPLE  # noqa: E402

TEXTS = ["I am a cat. As yet I have no name.", "Hello, World! naïve CAFÉ – Straße.", "日本語のテキスト と 中文",
         "unaffable don't re-enter (x) 3.14", "", "   ", "[MASK] is text here"]


def google_layout(pieces: list[str]) -> list[str]:
    """A vocabulary laid out like Google's bert-base: [PAD], [unused0-98], [UNK] [CLS] [SEP] [MASK], pieces."""
    return ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *pieces]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wp") / "tok"
    train(Corpus([SAMPLE]), out, TrainOptions(vocab_size=1200, model_type="wordpiece", lowercase=True, threads=1))
    return out


@pytest.fixture(scope="module")
def tok(trained) -> WordPieceTokenizer:
    return Tokenizer.load(trained)


@pytest.fixture(scope="module")
def google_vocab(tok, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("google") / "vocab.txt"
    path.write_text("".join(p + "\n" for p in google_layout(tok.vocab[5:])), encoding="utf-8")
    return path


# --- training -------------------------------------------------------------------------------------

def test_trained_vocab_puts_the_specials_first_and_marks_continuations(trained, tok):
    assert tok.kind == "wordpiece" and tok.vocab_size == 1200
    assert tok.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    meta = json.loads((trained / "bertcli_tokenizer.json").read_text())
    assert meta["format_version"] == 2 and meta["kind"] == "wordpiece" and meta["options"]["lowercase"] is True
    assert (trained / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == tok.vocab
    assert any(p.startswith("##") for p in tok.vocab)


def test_bert_tokenizers_read_the_vocab_and_give_bertcli_ids(trained, tok):
    transformers = pytest.importorskip("transformers")
    slow = transformers.BertTokenizer(str(trained / "vocab.txt"), do_lower_case=True)
    sample = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()][:300]
    for text in TEXTS[:-1] + sample:  # the slow tokenizer reads "[MASK]" in text as the token
        assert tok.encode([text])[0] == slow(text, add_special_tokens=False)["input_ids"], text


def test_known_answers(tok):
    # lowercased, split at punctuation, longest pieces first; accents stripped; each CJK character a
    # word of its own (unknown to an English vocabulary, one [UNK] each)
    assert tok.pieces_of("Hello, world!") == ["hel", "##l", "##o", ",", "wor", "##ld", "!"]
    assert tok.pieces_of("I am a CAT.") == ["i", "am", "a", "c", "##at", "."]
    assert tok.pieces_of("don't re-enter") == ["don", "'", "t", "re", "-", "ent", "##er"]
    assert tok.pieces_of("naïve 日本") == ["n", "##a", "##ive", "[UNK]", "[UNK]"]
    pieces = tok.pieces_of("[MASK]")  # text, not the token (as SentencePiece's)
    assert pieces[0] == "[" and pieces[-1] == "]" and tok.mask_id not in tok.encode(["[MASK]"])[0]
    assert tok.pieces_of("x" * 101) == ["[UNK]"]  # BERT's max_input_chars_per_word


def test_batched_and_threaded_encode_agree(tok):
    assert tok.encode(TEXTS, threads=2) == tok.encode(TEXTS) == [tok.encode([t])[0] for t in TEXTS]


def test_cased_training_keeps_case(tmp_path):
    train(Corpus([SAMPLE]), tmp_path / "cased", TrainOptions(vocab_size=800, model_type="wordpiece", threads=1))
    cased = Tokenizer.load(tmp_path / "cased")
    assert cased.options["lowercase"] is False and cased.encode(["The"]) != cased.encode(["the"])


def test_word_starts_and_never_replace(tok):
    starts, never = tok.word_starts(), tok.never_replace()
    for i, piece in enumerate(tok.vocab):
        assert starts[i] == (not piece.startswith("##") or never[i])
    assert never.sum() == 5 and never[:5].all()


def test_damaged_or_edited_directories_are_refused(trained, tmp_path):
    d = shutil.copytree(trained, tmp_path / "t")
    (d / "vocab.txt").write_text((d / "vocab.txt").read_text() + "extra\n")
    with pytest.raises(Exception, match="does not match its sha256"):
        Tokenizer.load(d)
    d = shutil.copytree(trained, tmp_path / "u")
    meta = json.loads((d / "bertcli_tokenizer.json").read_text())
    (d / "bertcli_tokenizer.json").write_text(json.dumps(meta | {"options": {**meta["options"], "lowercase": False}}))
    with pytest.raises(Exception, match="sha256 or special ids"):
        Tokenizer.load(d)


# --- adopting a published vocabulary --------------------------------------------------------------

def test_a_google_vocab_keeps_its_ids(google_vocab, tmp_path, tok):
    summary = adopt(google_vocab, tmp_path / "g", lowercase=True)
    g = Tokenizer.load(tmp_path / "g")
    assert g.special_ids == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103} == summary["special_ids"]
    assert g.vocab_size == tok.vocab_size + 99
    assert all(a == b + 99 if b >= 5 else True for a, b in zip(g.encode(TEXTS)[0], tok.encode(TEXTS)[0]))
    never = g.never_replace()
    assert never[:104].all() and never.sum() == 104  # specials and [unused0-98]
    assert g.replacement_ids().min() == 104


def test_a_bare_vocab_must_say_whether_it_is_uncased(google_vocab, tmp_path):
    with pytest.raises(Exception, match="pass --lowercase .* or --no-lowercase"):
        adopt(google_vocab, tmp_path / "g", lowercase=None)


def test_a_hugging_face_directory_is_adopted_with_its_options(google_vocab, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "hf"
    transformers.BertTokenizerFast(str(google_vocab), do_lower_case=False).save_pretrained(hf_dir)
    adopt(hf_dir, tmp_path / "a")
    a = Tokenizer.load(tmp_path / "a")
    assert a.options["lowercase"] is False and a.special_ids["cls"] == 101
    reference = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for text in TEXTS[:-1]:
        assert [101, *a.encode([text])[0], 102] == reference(text)["input_ids"]
    with pytest.raises(Exception, match="contradicts"):
        adopt(hf_dir, tmp_path / "b", lowercase=True)


def test_add_words_fill_unused_slots_and_keep_the_size(google_vocab, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("Botchan-ish\n", encoding="utf-8")
    with pytest.raises(Exception, match="line 1 .* is not one word"):
        adopt(google_vocab, tmp_path / "x", lowercase=True, words_file=words)
    words.write_text("Covid\nthe\n\nmRNA\ncovid\n", encoding="utf-8")
    summary = adopt(google_vocab, tmp_path / "g", lowercase=True, words_file=words)
    g = Tokenizer.load(tmp_path / "g")
    assert summary["added_words"] == ["covid", "mrna"] and summary["known_words"] == ["the", "covid"]
    assert g.vocab[1:3] == ["covid", "mrna"] and g.vocab[3] == "[unused2]"
    assert g.vocab_size == len(google_vocab.read_text().splitlines())
    assert g.pieces_of("COVID mRNA") == ["covid", "mrna"]
    assert not g.never_replace()[1:3].any()  # real words now


def test_more_words_than_slots_is_refused(google_vocab, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("".join(f"zzword{i}\n" for i in range(100)), encoding="utf-8")
    with pytest.raises(Exception, match="100 new words but the vocabulary has only 99"):
        adopt(google_vocab, tmp_path / "g", lowercase=True, words_file=words)


@pytest.mark.parametrize("content, message", [
    ("[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\n", "has no [MASK]"),
    ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nword\nword\n", "is on lines 6 and 7"),
    ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\nword\n", "line 6"),
    ("", "is empty"),
])
def test_bad_vocabularies_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(Exception, match=re.escape(message)) as err:
        adopt(path, tmp_path / "out", lowercase=True)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_a_non_wordpiece_hf_tokenizer_goes_to_the_adopted_kind(tmp_path):
    """A BPE tokenizer.json is adopted as it is (tokenizer/adopted.py); a broken one is one line, nothing written."""
    d = tmp_path / "bpe"
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(Exception, match="not a Hugging Face tokenizers file") as err:
        adopt(d, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_cli_tokenize_from(cli, google_vocab, tmp_path):
    code, _, err = cli("tokenize", "--from", google_vocab, "--lowercase", "--out", tmp_path / "t")
    assert code == 0 and "cls=101" in err
    code, _, err = cli("tokenize", SAMPLE, "--from", google_vocab, "--out", tmp_path / "u")
    assert code == 2 and "give no INPUT" in err
    code, _, err = cli("tokenize", SAMPLE, "--add-words", google_vocab, "--out", tmp_path / "v")
    assert code == 2 and "use it with --from" in err


def test_cli_tokenize_wordpiece(cli, tmp_path):
    code, _, err = cli("tokenize", SAMPLE, "--model-type", "wordpiece", "--vocab-size", 600, "--out", tmp_path / "t")
    assert code == 0, err
    assert Tokenizer.load(tmp_path / "t").vocab_size == 600
    code, _, err = cli("tokenize", SAMPLE, "--model-type", "wordpiece", "--byte-fallback", "--out", tmp_path / "u")
    assert code == 2 and "--byte-fallback is a SentencePiece option" in err


# --- whole-word masking on `##` -------------------------------------------------------------------

def google_tokenizer(pieces: list[str]) -> WordPieceTokenizer:
    return WordPieceTokenizer(google_layout(pieces), wordpiece_options(lowercase=True))


def test_whole_word_masking_groups_a_word_with_its_continuations():
    tok = google_tokenizer(["un", "##aff", "##able", "the", "cat", "##s", "sat", "."])
    ids = tok.encode(["the unaffable cats sat."])[0]
    assert tok.pieces(ids) == ["the", "un", "##aff", "##able", "cat", "##s", "sat", "."]
    tokens = np.array([tok.cls_id, *ids, tok.sep_id])
    words = [{1}, {2, 3, 4}, {5, 6}, {7}, {8}]
    params = MaskingParams.from_tokenizer(tok, 0.3, 20, whole_word_mask=True)  # quota round(10 * 0.3) = 3
    seen = set()
    for seed in range(200):
        masked = mask_tokens(tokens, np.array([0, len(tokens)]), params, np.random.default_rng(seed))
        chosen = set(masked.positions.tolist())
        assert chosen and all(w <= chosen or not w & chosen for w in words)  # whole words only
        seen.add(frozenset(chosen))
    assert frozenset({2, 3, 4}) in seen and frozenset({5, 6, 1}) in seen


def test_eighty_ten_ten_never_draws_a_special_or_unused_id():
    tok = google_tokenizer(["w", "##x", "y", "z"])
    word, cont = tok.vocab.index("w"), tok.vocab.index("##x")
    n, length = 4000, 102
    one = np.r_[tok.cls_id, np.tile([word, cont], (length - 2) // 2), tok.sep_id]
    tokens = np.tile(one, n)
    offsets = np.arange(n + 1) * length
    params = MaskingParams.from_tokenizer(tok, 0.15, 20, whole_word_mask=True)
    masked = mask_tokens(tokens, offsets, params, np.random.default_rng(1))
    assert (masked.counts == 14).all()  # round(102 * 0.15) = 15, filled by whole 2-piece words: 14
    instance = np.repeat(np.arange(n), masked.counts)
    new = masked.input_ids[offsets[instance] + masked.positions]
    kept = new == masked.original_ids
    assert abs((new == tok.mask_id).mean() - 0.8) < 0.01
    replaced = new[(new != tok.mask_id) & ~kept]
    assert replaced.min() >= 104 and set(replaced.tolist()) <= set(tok.replacement_ids().tolist())
    # kept: the 10% "keep" plus random draws that hit the original (1 in 4 replacement ids)
    assert abs(kept.mean() - (0.1 + 0.1 / 4)) < 0.01
