"""The SentencePiece tokenizer: special ids, round trips, known answers, sampling, trainer errors,
atomic output, format versions (WordPiece: test_wordpiece.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bertcli import fsutil
from bertcli.tokenizer import base, sentencepiece_model
from bertcli.corpus import Corpus
from bertcli.errors import DataError, UsageError
from bertcli.tokenizer import (MAX_SENTENCE_BYTES, META_FILE, MODEL_FILE, SPECIAL_TOKENS, VOCAB_FILE,
                               Tokenizer, TrainOptions, drop_long_sentences, sample_sentences, train)

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "botchan.txt"
# Fixed here, not shared with other tests, because the known answers below depend on them (bpe named:
# the vocabulary-size limits below are BPE's; unigram, the default, needs a larger vocabulary).
OPTIONS = dict(vocab_size=2000, model_type="bpe", threads=1, seed=7)
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}  # where `bertcli tokenize` puts them


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """name -> tokenizer directory, for the plain, byte-fallback and lowercase variants."""
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {}
    for name, extra in {"plain": {}, "bytes": {"byte_fallback": True}, "lower": {"lowercase": True}}.items():
        dirs[name] = root / name
        train(Corpus([SAMPLE]), dirs[name], TrainOptions(**OPTIONS, **extra))
    return dirs


@pytest.fixture(scope="module")
def tok(trained):
    return Tokenizer.load(trained["plain"])


def small_corpus(tmp_path: Path, text: str, name: str = "c.txt") -> Corpus:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return Corpus([path])


# --- the directory and its special ids ------------------------------------------------------------

def test_special_tokens_have_fixed_ids(trained, tok):
    assert [tok.sp.id_to_piece(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_id, tok.sp.unk_id(), tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.sp.bos_id() == tok.sp.eos_id() == -1  # BERT adds [CLS]/[SEP] itself
    vocab = (trained["plain"] / VOCAB_FILE).read_text(encoding="utf-8").splitlines()
    assert len(vocab) == tok.vocab_size == 2000
    assert [line.split("\t")[0] for line in vocab[:5]] == list(SPECIAL_TOKENS.values())
    assert not any(line.endswith("\t-0") for line in vocab)


def test_metadata_is_versioned_and_hashes_the_model(trained):
    meta = json.loads((trained["plain"] / META_FILE).read_text())
    assert meta["format"] == "bertcli-tokenizer" and meta["format_version"] == 2 and meta["kind"] == "sentencepiece"
    assert meta["sha256"] == hashlib.sha256((trained["plain"] / MODEL_FILE).read_bytes()).hexdigest()
    assert meta["special_ids"] == SPECIAL_IDS and meta["vocab_size"] == 2000
    assert meta["options"]["model_type"] == "bpe" and meta["options"]["threads"] == 1
    assert meta["sentences_seen"] == meta["sentences_sampled"] == 2916


@pytest.mark.parametrize("text", ["[MASK]", "[CLS] a [SEP] b [SEP]", "the [MASK] sat", "[PAD][UNK]"])
def test_text_spelling_a_special_token_never_encodes_to_it(tok, text):
    ids = tok.encode([text])[0]
    assert not set(ids) & set(SPECIAL_IDS.values())
    assert tok.decode(ids) == text


# --- round trips and known answers ----------------------------------------------------------------

EDGE_CASES = {
    "empty": "",
    "one character": "a",
    "sentence": "I am a cat.",
    "spaces": "  spaced   out  ",
    "mask": "[MASK]",
    "unicode": "ﬁne ｆｕｌｌｗｉｄｔｈ ａｎｄ ①",  # NFKC folds these into characters the corpus has
    # ~80 KB on one line, in lower-case letters: digits and some capitals are rarer in the corpus
    # than the character coverage keeps, and would decode as [UNK]
    "very long line": " ".join(w.lower() for w in SAMPLE.read_text(encoding="utf-8").split()[:20000] if w.isalpha()),
}


@pytest.mark.parametrize("text", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_round_trip_gives_normalised_text(tok, text):
    assert tok.decode(tok.encode([text])[0]) == tok.normalize(text)


@pytest.mark.parametrize("text", ["café", "☃ snowman", "日本語のテキスト", "emoji 🙂 here", "ﬁne ①"])
def test_byte_fallback_round_trips_any_unicode(trained, text):
    tok = Tokenizer.load(trained["bytes"])
    ids = tok.encode([text])[0]
    assert tok.sp.unk_id() not in ids
    assert tok.decode(ids) == tok.normalize(text)


@pytest.mark.parametrize("text, pieces", [
    ("", []),
    ("the", ["▁the"]),
    ("I am a cat.", ["▁I", "▁am", "▁a", "▁c", "at", "."]),
    ("[MASK]", ["▁[", "M", "A", "S", "K", "]"]),
    ("  spaced   out  ", ["▁sp", "aced", "▁out"]),  # runs of spaces collapse
    ("ﬁne", ["▁fine"]),  # NFKC: the ligature is two letters
    ("☃", ["▁", "[UNK]"]),  # not in the corpus, no byte fallback
])
def test_known_answers(tok, text, pieces):
    assert tok.pieces(tok.encode([text])[0]) == pieces


def test_known_answers_with_byte_fallback(trained):
    tok = Tokenizer.load(trained["bytes"])
    assert tok.pieces(tok.encode(["☃"])[0]) == ["▁", "<0xE2>", "<0x98>", "<0x83>"]  # U+2603 in UTF-8


def test_lowercase_tokenizer_folds_case(trained):
    tok = Tokenizer.load(trained["lower"])
    assert tok.normalize("The CAT") == "the cat"
    assert tok.encode(["The CAT"]) == tok.encode(["the cat"])
    assert not any(c.isupper() for c in "".join(tok.pieces(range(5, tok.vocab_size))))


def test_unknown_character_decodes_to_the_unknown_mark(tok):
    assert tok.decode(tok.encode(["a ☃ b"])[0]) == "a  ⁇  b"


def test_batched_encode_matches_one_at_a_time(tok):
    texts = [EDGE_CASES["sentence"], "", "Botchan", EDGE_CASES["mask"]]
    assert tok.encode(texts, threads=2) == [tok.encode([t])[0] for t in texts]


def test_word_starts_mark_pieces_that_begin_a_word(tok):
    starts = tok.word_starts()
    assert starts.shape == (tok.vocab_size,) and starts[:5].all()
    assert starts[tok.sp.piece_to_id("▁the")] and not starts[tok.sp.piece_to_id("at")]


# --- training: reproducibility, options, errors ---------------------------------------------------

def test_same_inputs_and_seed_give_a_byte_identical_model(tmp_path, trained):
    train(Corpus([SAMPLE]), tmp_path / "again", TrainOptions(**OPTIONS))
    assert (tmp_path / "again" / MODEL_FILE).read_bytes() == (trained["plain"] / MODEL_FILE).read_bytes()


def test_input_sentence_size_trains_on_a_sample(tmp_path):
    train(Corpus([SAMPLE]), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=500, threads=1, input_sentence_size=300))
    meta = json.loads((tmp_path / "t" / META_FILE).read_text())
    assert (meta["sentences_seen"], meta["sentences_sampled"]) == (2916, 300)


@pytest.mark.parametrize("field, value, option", [
    ("model_type", "word", "--model-type"),
    ("vocab_size", 5, "--vocab-size"),
    ("vocab_size", 2**31, "--vocab-size"),
    ("character_coverage", 0.5, "--character-coverage"),
    ("character_coverage", float("nan"), "--character-coverage"),
    ("input_sentence_size", 0, "--input-sentence-size"),
    ("threads", -1, "--threads"),
    ("seed", -1, "--seed"),
    ("seed", 2**32, "--seed"),
])
def test_bad_options_are_usage_errors_naming_the_option(field, value, option):
    with pytest.raises(UsageError, match=option) as err:
        TrainOptions(**{field: value}).validate()
    assert err.value.exit_code == 2


def test_vocab_too_large_names_the_largest_that_works(tmp_path):
    corpus_text = "\n".join(SAMPLE.read_text(encoding="utf-8").splitlines()[:400])
    with pytest.raises(UsageError, match=r"--vocab-size 8000 .*largest that works is (\d+)") as err:
        train(small_corpus(tmp_path, corpus_text), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=8000, threads=1))
    largest = int(err.value.args[0].split("largest that works is ")[1].split()[0])
    report = train(small_corpus(tmp_path, corpus_text), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=largest, threads=1))
    assert report.vocab_size == largest


def test_vocab_below_the_characters_names_the_smallest_that_works(tmp_path):
    text = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n" * 20
    with pytest.raises(UsageError, match=r"--vocab-size 30 is below the (\d+) characters.*use at least") as err:
        train(small_corpus(tmp_path, text), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=30, threads=1))
    smallest = int(err.value.args[0].split("use at least ")[1].split()[0])
    assert train(small_corpus(tmp_path, text), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=smallest, threads=1)).vocab_size == smallest


@pytest.mark.parametrize("text", ["", "\n\n   \n\t\n"])
def test_empty_corpus_is_a_usage_error(tmp_path, text):
    with pytest.raises(UsageError, match="no non-empty lines") as err:
        train(small_corpus(tmp_path, text, "empty.txt"), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=100))
    assert "empty.txt" in str(err.value) and not (tmp_path / "t").exists()


def test_a_corpus_of_only_control_characters_says_so(tmp_path):
    with pytest.raises(UsageError, match="no characters to learn from"):
        train(small_corpus(tmp_path, "\x01\x02\n\u200b\n" * 5), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=40))


def test_lines_over_sentencepieces_limit_are_counted_and_reported(tmp_path):
    long_line = "word " * (MAX_SENTENCE_BYTES // 5 + 1)
    text = "\n".join(["a short line of text", long_line] * 30)
    report = train(small_corpus(tmp_path, text), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=40, threads=1))
    assert (report.sentences_seen, report.sentences_sampled) == (60, 30)
    assert any(w.startswith(f"30 sampled line(s) longer than {MAX_SENTENCE_BYTES} bytes") for w in report.warnings)
    assert json.loads((tmp_path / "t" / META_FILE).read_text())["sentences_too_long"] == 30


def test_a_corpus_of_only_long_lines_says_so(tmp_path):
    with pytest.raises(UsageError, match=f"all 1 sampled line.* longer than {MAX_SENTENCE_BYTES} bytes"):
        train(small_corpus(tmp_path, "word " * 2000), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=40))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a directory nobody can write in")
def test_unwritable_out_fails_before_training(monkeypatch):
    monkeypatch.setattr(sentencepiece_model, "train_model", lambda *args: pytest.fail("trained before checking --out"))
    with pytest.raises(UsageError, match="--out /proc/tok: cannot write there"):
        train(Corpus([SAMPLE]), Path("/proc/tok"), TrainOptions(model_type="bpe", vocab_size=100))


def test_long_sentences_are_measured_in_bytes_not_characters():
    assert drop_long_sentences(["12345678", "123456789", "ééé", "éééé", "ééééé", "€€"], limit=8) == \
        ["12345678", "ééé", "éééé", "€€"]


def test_invalid_utf8_is_a_warning_in_the_report(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"some text here\n" * 20 + b"bad \xff\n")
    report = train(Corpus([path]), tmp_path / "t", TrainOptions(model_type="bpe", vocab_size=30, threads=1))
    assert report.warnings == [f"1 line(s) had invalid UTF-8, replaced with U+FFFD (first at {path}:21); "
                               f"pass --strict to make this an error"]


# --- the output directory -------------------------------------------------------------------------

def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(fsutil.TMP_PREFIX)]


def test_non_empty_out_dir_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"--out .*tok is not empty; pass --overwrite"):
        train(small_corpus(tmp_path, "abc def\n" * 10), out, TrainOptions(model_type="bpe", vocab_size=20))
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaces only a tokenizer bertcli made, never the user's own directory
    with pytest.raises(UsageError, match=r"--out .*tok was not made by bertcli"):
        train(small_corpus(tmp_path, "abc def\n" * 10), out, TrainOptions(model_type="bpe", vocab_size=20), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    ours = tmp_path / "ours"
    train(small_corpus(tmp_path, "abc def\n" * 10), ours, TrainOptions(model_type="bpe", vocab_size=20))
    train(small_corpus(tmp_path, "abc ghi\n" * 10), ours, TrainOptions(model_type="bpe", vocab_size=20), overwrite=True)
    assert sorted(p.name for p in ours.iterdir()) == sorted([MODEL_FILE, META_FILE, VOCAB_FILE, fsutil.OWNER_FILE])
    assert leftovers(tmp_path) == []


def test_out_dir_holding_an_input_is_refused_even_with_overwrite(tmp_path):
    corpus = small_corpus(tmp_path, "abc def\n" * 10)
    with pytest.raises(UsageError, match="holds the input"):
        train(corpus, tmp_path, TrainOptions(model_type="bpe", vocab_size=20), overwrite=True)
    assert corpus.files[0].exists()


def test_failed_training_leaves_the_old_tokenizer_untouched(tmp_path, trained):
    out = tmp_path / "tok"
    train(small_corpus(tmp_path, "abc def\n" * 10), out, TrainOptions(model_type="bpe", vocab_size=20))
    before = (out / MODEL_FILE).read_bytes()
    with pytest.raises(UsageError, match="largest that works"):
        train(small_corpus(tmp_path, "abc def\n" * 10), out, TrainOptions(model_type="bpe", vocab_size=5000), overwrite=True)
    assert (out / MODEL_FILE).read_bytes() == before and leftovers(tmp_path) == []


def test_failure_while_writing_leaves_no_half_written_tokenizer(tmp_path, monkeypatch):
    def disk_full(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(base, "write_json_atomic", disk_full)
    with pytest.raises(OSError):
        train(small_corpus(tmp_path, "abc def\n" * 10), tmp_path / "tok", TrainOptions(model_type="bpe", vocab_size=20))
    assert not (tmp_path / "tok").exists() and leftovers(tmp_path) == []


# --- loading --------------------------------------------------------------------------------------

def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / META_FILE).unlink(), "is not a bertcli tokenizer"),
    (lambda d: (d / META_FILE).write_text(json.dumps(json.loads((d / META_FILE).read_text()) | {"kind": "bpe"})),
     "unknown tokenizer kind"),
    (lambda d: (d / META_FILE).write_text(json.dumps(json.loads((d / META_FILE).read_text())
                                                     | {"special_ids": {**SPECIAL_IDS, "mask": 7}})), "is not at id 7"),
    (lambda d: (d / MODEL_FILE).write_bytes((d / MODEL_FILE).read_bytes()[:-1] + b"x"), "does not match the sha256"),
    (lambda d: (d / META_FILE).write_text(json.dumps(json.loads((d / META_FILE).read_text()) | {"format_version": 99})),
     "format_version 99"),
    (lambda d: (d / META_FILE).write_text("{not json"), "not valid JSON"),
])
def test_load_refuses_a_damaged_tokenizer_with_one_line(trained, tmp_path, damage, message):
    d = copy_dir(trained["plain"], tmp_path / "tok")
    damage(d)
    with pytest.raises(Exception, match=message) as err:
        Tokenizer.load(d)
    assert "\n" not in str(err.value) and str(d) in str(err.value)


def test_load_of_a_missing_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(UsageError, match="does not exist; make one with `bertcli tokenize`"):
        Tokenizer.load(tmp_path / "nope")


# --- reservoir sampling ---------------------------------------------------------------------------

def test_sample_is_bounded_and_counts_everything_seen():
    sample, seen = sample_sentences((f"s{i}" for i in range(100_000)), 50, seed=1)
    assert len(sample) == 50 and seen == 100_000 and len(set(sample)) == 50


def test_sample_of_a_small_corpus_is_the_corpus_in_order():
    assert sample_sentences(iter(["a", "b", "c"]), 10, seed=1) == (["a", "b", "c"], 3)
    assert sample_sentences(iter([]), 10, seed=1) == ([], 0)


def test_sample_is_deterministic_in_the_seed():
    items = [str(i) for i in range(1000)]
    assert sample_sentences(items, 20, seed=3) == sample_sentences(items, 20, seed=3)
    assert sample_sentences(items, 20, seed=3)[0] != sample_sentences(items, 20, seed=4)[0]


def test_sample_is_roughly_uniform():
    n, k, trials = 100, 10, 3000
    counts = [0] * n
    for seed in range(trials):
        for item in sample_sentences(range(n), k, seed)[0]:
            counts[item] += 1
    rates = [c / trials for c in counts]
    # Each item should be kept with probability k/n = 0.1 (standard error ~0.0055 here).
    assert all(0.075 < r < 0.125 for r in rates), (min(rates), max(rates))
    early, late = sum(counts[: n // 2]), sum(counts[n // 2:])
    assert abs(early - late) / (early + late) < 0.03  # no bias towards the start or the end


def test_a_format_version_1_directory_is_refused(trained, tmp_path):
    """One reader per format: what bertcli wrote before WordPiece (metadata in tokenizer.json) is not read."""
    old = copy_dir(trained["plain"], tmp_path / "v1")
    meta = json.loads((old / META_FILE).read_text())
    (old / META_FILE).unlink()
    (old / "tokenizer.json").write_text(json.dumps(meta | {"format_version": 1}))
    with pytest.raises(UsageError, match="not a bertcli tokenizer"):
        Tokenizer.load(old)
    (old / META_FILE).write_text(json.dumps(meta | {"format_version": 1}))
    with pytest.raises(UsageError, match="format_version 1, this bertcli reads 2"):
        Tokenizer.load(old)


def test_never_replace_holds_the_specials_only(tok):
    never = tok.never_replace()
    assert never.sum() == 5 and never[:5].all()
    assert (tok.replacement_ids() == range(5, tok.vocab_size)).all()


def test_save_writes_a_directory_that_loads_to_the_same_tokenizer(tok, tmp_path):
    tok.save(tmp_path / "copy")
    again = Tokenizer.load(tmp_path / "copy")
    assert again.sha256 == tok.sha256 and again.vocab == tok.vocab and again.special_ids == tok.special_ids
