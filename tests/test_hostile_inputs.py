"""Crafted and careless inputs of safety round 3 (issue 22 §4, 7, 12, 14, 16-24): each is refused
in one line (exit 1 or 2) or read correctly and said, never a traceback, a signal death or a
silent wrong result. Families are tested with several variants each."""

from __future__ import annotations

import errno
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE

MARKUP = "intcol:train: a:smile:b [unused] [bold red]x [link=http:e.x]y \\[z] :thumbs_up:"  # no "/": a path's part


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def error_of(err: str) -> str:
    """The error line (warnings may come before it)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# --- messages (§22, §23) --------------------------------------------------------------------------

def _markup_path(root: Path, name: str) -> Path:
    """A path of ~2,000 characters whose every part holds markup-like text."""
    d = root
    for i in range(9):
        d = d / (f"{i} {MARKUP} " + "k" * 100)
    return d / name


@pytest.mark.parametrize("path", ["usage", "data", "os", "warning"])
def test_user_text_prints_verbatim_and_bounded_on_every_error_path(cli, tmp_path, path):
    """Every way bertcli prints a problem, each with a ~2,000-character path full of markup: a
    UsageError (exit 2), a DataError (exit 1), an OSError the system raised for the user's path
    (exit 1), and a warning."""
    from bertcli.console import MAX_LINE_CHARS, warn

    target = _markup_path(tmp_path, "in [x].txt.gz")
    if path == "warning":
        warn(f"{target} " + "k" * 30_000 + " the end")
    if path == "usage":
        code, _, err = cli("tokenize", target, "--out", tmp_path / "tok")
    elif path == "data":
        target.parent.mkdir(parents=True)
        target.write_bytes(b"\x1f\x8b not gzip")
        code, _, err = cli("tokenize", target, "--out", tmp_path / "tok")
    elif path == "os":
        code, _, err = cli("tokenize", tmp_path / (MARKUP + "n" * 300), "--out", tmp_path / "tok")
    else:
        code, _, err = cli("--version")  # flushes what warn printed into the captured stderr
    line = one_line(err)
    assert code == {"usage": 2, "data": 1, "os": 1, "warning": 0}[path], err
    assert MARKUP in line  # not a word lost, no emoji, no style eaten
    assert len(line) <= MAX_LINE_CHARS + len("warning: ")


def test_a_missing_input_with_markup_in_its_name_is_named_as_written(cli, tmp_path):
    name = tmp_path / "a:smile:b [unused] [bold]x[/bold].txt"
    code, _, err = cli("tokenize", name, "--out", tmp_path / "tok")
    assert code == 2 and str(name) in one_line(err)


def test_a_record_of_a_million_keys_gives_a_bounded_line(cli, tmp_path):
    record = {f"key{i:07d}" + "x" * 30: 1 for i in range(30_000)}  # ~1 MiB of keys
    (tmp_path / "in.jsonl").write_text(json.dumps(record) + "\n")
    code, _, err = cli("tokenize", tmp_path / "in.jsonl", "--out", tmp_path / "tok")
    assert code == 2 and "no record has the field 'text'" in error_of(err)
    assert len(err) < 1000


# --- silent cases (§16-21) ------------------------------------------------------------------------

def test_a_truncated_zst_is_an_error_like_a_truncated_gzip(cli, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    data = SAMPLE.read_bytes()
    whole = zstandard.ZstdCompressor().compress(data)
    for name, payload in [("cut.txt.zst", whole[: len(whole) // 2]), ("cut2.txt.zst", whole + whole[:40]),
                          ("cut.txt.gz", gzip.compress(data)[:5000])]:
        (tmp_path / name).write_bytes(payload)
        code, _, err = cli("tokenize", tmp_path / name, "--out", tmp_path / "tok", "--vocab-size", 500)
        assert code == 1 and "truncated or corrupt" in error_of(err), name
    (tmp_path / "two.txt.zst").write_bytes(whole + zstandard.ZstdCompressor().compress(b"More text here.\n"))
    code, _, err = cli("tokenize", tmp_path / "two.txt.zst", "--out", tmp_path / "tok", "--vocab-size", 500)
    assert code == 0, err  # several whole frames are one file


@pytest.mark.parametrize("encoding, fmt", [("utf-16-le", ".txt"), ("utf-16-be", ".txt"), ("utf-16", ".txt"),
                                           ("utf-32", ".txt"), ("utf-16-le", ".jsonl")])
def test_utf16_without_a_bom_and_nul_heavy_text_are_said(cli, tmp_path, encoding, fmt):
    text = SAMPLE.read_text(encoding="utf-8")[:20000]
    if fmt == ".jsonl":
        text = "\n".join(json.dumps({"text": line}) for line in text.splitlines() if line.strip())
    path = tmp_path / f"in{fmt}"
    path.write_bytes(text.encode(encoding))
    code, _, err = cli("tokenize", path, "--out", tmp_path / "tok", "--vocab-size", 200)
    assert code == 1 and "NUL" in error_of(err) and str(path) in error_of(err)
    assert ("UTF-16" in err) == encoding.startswith("utf-16")


@pytest.mark.slow  # trains two tokenizers
def test_bertcli_outputs_inside_an_input_directory_are_left_out_and_said(cli, tmp_path, tokenizer_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SAMPLE, corpus / "botchan.txt")
    code, _, err = cli("tokenize", corpus, "--out", corpus / "tok", "--vocab-size", 500, "--threads", 1)
    assert code == 0, err
    code, _, err = cli("tokenize", corpus, "--out", tmp_path / "tok2", "--vocab-size", 500, "--threads", 1)
    assert code == 0 and "left out 1 bertcli output directory" in err and str(corpus / "tok") in err
    manifest_inputs = json.loads((tmp_path / "tok2" / "bertcli_tokenizer.json").read_text()).get("inputs")
    if manifest_inputs is not None:
        assert all("vocab.txt" not in str(i) for i in manifest_inputs)
    from bertcli.corpus import expand_inputs

    assert expand_inputs([str(corpus)]) == [(corpus / "botchan.txt").resolve()]


@pytest.mark.parametrize("dirs", [["{d}", "{d}/"], ["{d}", "./{rel}"], ["{d}", "{d}/../data"], ["{d}", ""]])
def test_the_same_data_directory_twice_is_refused(cli, tmp_path, monkeypatch, dirs):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    listed = [x.format(d=tmp_path / "data", rel="data") for x in dirs]
    code, _, err = cli("pretrain", "--set", f"data.dir={json.dumps(listed)}", "--set", f"out_dir={tmp_path}/run")
    assert code == 2 and "data.dir lists" in one_line(err)


@pytest.mark.parametrize("keys", [("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight"),
                                  ("bert.embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.weight"),
                                  ("encoder.layer.0.output.LayerNorm.beta", "bert.encoder.layer.0.output.LayerNorm.bias")])
def test_weight_keys_that_collide_once_normalised_are_refused(keys):
    import torch

    from bertcli.errors import UsageError
    from bertcli.weights import normalize_keys

    with pytest.raises(UsageError, match="ambiguous"):
        normalize_keys({k: torch.ones(2) for k in keys}, Path("ckpt"))


def test_add_words_beyond_wordpiece_reach_and_dataset_with_from_are_refused(cli, tmp_path):
    pytest.importorskip("tokenizers")
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(5)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "words.txt").write_text("fine\n" + "w" * 101 + "\n")
    code, _, err = cli("tokenize", "--from", tmp_path / "vocab.txt", "--lowercase", "--add-words",
                       tmp_path / "words.txt", "--out", tmp_path / "tok")
    assert code == 2 and "101 characters" in one_line(err)
    (tmp_path / "wdir").mkdir()
    for source in ("/dev/zero", tmp_path / "wdir"):
        code, _, err = cli("tokenize", "--from", tmp_path / "vocab.txt", "--lowercase", "--add-words", source,
                           "--out", tmp_path / "tok")
        assert code == 2 and "--add-words" in one_line(err)
    code, _, err = cli("tokenize", "--from", tmp_path / "vocab.txt", "--dataset", "wikitext", "--out", tmp_path / "tok")
    assert code == 2 and "--dataset" in one_line(err)
    assert not (tmp_path / "tok").exists()


# --- crafted tokenizer files (§14) ------------------------------------------------------------------

def _hf_tokenizer_dir(tmp_path) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s"]
    d = tmp_path / "hf"
    d.mkdir()
    fast = {"version": "1.0", "normalizer": {"type": "BertNormalizer", "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "vocab": {p: i for i, p in enumerate(vocab)}}}
    (d / "tokenizer.json").write_text(json.dumps(fast))
    return d


@pytest.mark.parametrize("edit", [
    lambda t: t.update(model=[1, 2]), lambda t: t.update(model="WordPiece"), lambda t: t.update(normalizer="Bert"),
    lambda t: t.update(normalizer=[1]), lambda t: t["model"].update(vocab={"[PAD]": "0", "[UNK]": 1}),
    lambda t: t["model"].update(vocab={p: str(i) for i, p in enumerate(t["model"]["vocab"])}),
    lambda t: t["model"].update(vocab=[["[PAD]", 0]]), lambda t: t["model"].update(vocab={"[PAD]": True}),
    lambda t: t["model"].update(type=["WordPiece"]), lambda t: t["normalizer"].update(type={"a": 1}),
])
def test_tokenize_from_a_crafted_tokenizer_json(cli, tmp_path, edit):
    pytest.importorskip("tokenizers")
    d = _hf_tokenizer_dir(tmp_path)
    fast = json.loads((d / "tokenizer.json").read_text())
    edit(fast)
    (d / "tokenizer.json").write_text(json.dumps(fast))
    code, _, err = cli("tokenize", "--from", d, "--out", tmp_path / "tok")
    assert code == 2 and "tokenizer.json" in one_line(err)


def test_an_untouched_crafted_base_is_adopted(cli, tmp_path):
    pytest.importorskip("tokenizers")
    code, _, err = cli("tokenize", "--from", _hf_tokenizer_dir(tmp_path), "--out", tmp_path / "tok")
    assert code == 0, err


@pytest.mark.parametrize("special_ids", [[0, 1, 2, 3, 4], "pad", {"pad": "0"}, {"pad": True}, {"evil": 0},
                                         {"pad": 2**40}, None])
def test_a_bertcli_tokenizer_json_with_wrong_special_ids(cli, tmp_path, tokenizer_dir, special_ids):
    tok = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, tok)
    meta = json.loads((tok / "bertcli_tokenizer.json").read_text())
    meta["special_ids"] = special_ids
    (tok / "bertcli_tokenizer.json").write_text(json.dumps(meta))
    (tmp_path / "in.txt").write_text("Some text.\n")
    code, _, err = cli("make-data", tmp_path / "in.txt", "--tokenizer", tok, "--out", tmp_path / "data")
    assert code == 2 and "bertcli_tokenizer.json" in one_line(err)


# --- readers (§12) --------------------------------------------------------------------------------

def test_deep_json_and_lone_surrogates_are_counted_not_tracebacks(cli, tmp_path, tokenizer_dir):
    lines = [json.dumps({"text": t}) for t in SAMPLE.read_text(encoding="utf-8").split("\n\n")[:200] if t.strip()]
    lines.insert(3, '{"text": "A lone \\ud800 surrogate. And \\udfff another."}')
    lines.insert(5, "[" * 100_000 + "]" * 100_000)
    lines.insert(7, '{"text": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001)
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = cli("tokenize", tmp_path / "in.jsonl", "--out", tmp_path / "tok", "--vocab-size", 300)
    assert code == 0 and "2 of" in err and "invalid UTF-8" in err, err
    code, _, err = cli("make-data", tmp_path / "in.jsonl", "--tokenizer", tokenizer_dir, "--out", tmp_path / "data",
                       "--workers", 1, "--dupe-factor", 1)
    assert code == 0 and "Traceback" not in err, err
    code, _, err = cli("make-data", tmp_path / "in.jsonl", "--tokenizer", tokenizer_dir, "--out", tmp_path / "d2",
                       "--strict")
    assert code == 1 and ":4:" in error_of(err) and "surrogate" in error_of(err)


def test_invalid_utf8_in_a_parquet_column_is_skipped_and_said(cli, tmp_path, tokenizer_dir):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [t.encode() for t in SAMPLE.read_text(encoding="utf-8").split("\n\n")[:100] if t.strip()]
    texts[2] = b"broken \xff\xfe text. More of it."
    for dictionary in (True, False):
        column = pa.array(texts, pa.binary()).cast(pa.string(), safe=False)
        pq.write_table(pa.table({"text": column}), tmp_path / "in.parquet", use_dictionary=dictionary)
        code, _, err = cli("make-data", tmp_path / "in.parquet", "--tokenizer", tokenizer_dir, "--out",
                           tmp_path / f"data{dictionary}", "--workers", 1, "--dupe-factor", 1)
        assert code == 0 and "row 3: a text that is not valid UTF-8" in " ".join(err.split()), err


# --- saved datasets (§4, §7, §10) -----------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [t for t in SAMPLE.read_text(encoding="utf-8").split("\n\n")[:50] if t.strip()]
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    return tmp_path / "ds"


def _arrow_name(ds: Path) -> str:
    return json.loads((ds / "state.json").read_text())["_data_files"][0]["filename"]


@pytest.mark.parametrize("attack", ["dotdot", "absolute", "symlink", "subdir", "nested"])
def test_a_saved_dataset_is_confined_to_its_directory(cli, saved, tmp_path, attack):
    name = _arrow_name(saved)
    state = json.loads((saved / "state.json").read_text())
    outside = tmp_path / "outside.arrow"
    shutil.move(saved / name, outside)
    target = {"dotdot": "../outside.arrow", "absolute": str(outside), "symlink": name, "subdir": "x/" + name,
              "nested": {"a": 1}}[attack]
    if attack == "symlink":
        (saved / name).symlink_to(outside)
    state["_data_files"] = [{"filename": target}]
    (saved / "state.json").write_text(json.dumps(state))
    code, _, err = cli("tokenize", "--dataset", saved, "--out", tmp_path / "tok", "--vocab-size", 200)
    assert code == 1 and "state.json" in error_of(err), err


@pytest.mark.slow  # a subprocess: the crash it guards against would kill pytest
def test_arrow_offsets_out_of_bounds_are_refused_not_a_crash(saved, tmp_path):
    """Checked in a child: an unchecked read of these offsets is a segmentation fault."""
    import pyarrow as pa

    path = saved / _arrow_name(saved)
    data = bytearray(path.read_bytes())
    table = pa.ipc.open_stream(pa.py_buffer(bytes(data))).read_all()
    offsets = table.column("text").chunk(0).buffers()[1].to_pybytes()
    where = bytes(data).find(offsets)
    assert where > 0
    last = len(offsets) - 4
    data[where + last: where + last + 4] = (2**30).to_bytes(4, "little")  # the last string ends 1 GB out
    path.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "bertcli", "tokenize", "--dataset", str(saved), "--out",
                           str(tmp_path / "tok"), "--vocab-size", "200"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "damaged" in one_line(proc.stderr), (proc.returncode, proc.stderr)


def test_a_directory_that_is_not_a_dataset_fails_fast(cli, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setattr("bertcli.readers.hf.MAX_SCAN_FILES", 50)
    (tmp_path / "tree").mkdir()
    for i in range(60):
        (tmp_path / "tree" / f"f{i}.bin").write_bytes(b"")
    code, _, err = cli("tokenize", "--dataset", tmp_path / "tree", "--out", tmp_path / "tok")
    assert code == 2 and "it is not a dataset" in one_line(err)
    (tmp_path / "empty").mkdir()
    code, _, err = cli("tokenize", "--dataset", tmp_path / "empty", "--out", tmp_path / "tok")
    assert code == 2 and "holds no data files" in one_line(err)


# --- CPU bounds (§10): the work is bounded, shown without timing -----------------------------------

def test_a_splitter_never_sees_more_than_its_bound(monkeypatch):
    from bertcli.segment import MAX_SPLIT_CHARS, Segmenter, pieces

    text = "Mr. Dr. e.g. i.e. St. " * 5000 + "Done."
    assert "".join(pieces(text, 1000)) == text
    seen = []
    seg = Segmenter("blingfire")
    monkeypatch.setitem(MAX_SPLIT_CHARS, "blingfire", 1000)
    inner = seg._split
    seg._split = lambda t: seen.append(len(t)) or inner(t)
    sentences = seg.split(text)
    assert max(seen) <= 1000 and len(seen) >= len(text) // 1000 and sentences[-1].endswith("Done.")


def test_a_run_of_a_million_blank_lines_is_skipped_in_bulk(tmp_path):
    from bertcli.readers.base import InputCounts
    from bertcli.readers.streams import BLANK_RUN_LINES, read_lines

    path = tmp_path / "blank.txt.gz"
    path.write_bytes(gzip.compress(b"first line\n" + b"\n \r\n" * 1_000_000 + b"last line\n"))

    class Progress:
        bytes_done = 0

    got = list(read_lines(path, InputCounts(str(path), "lines"), "utf-8", False, Progress(), 0))
    assert len(got) <= BLANK_RUN_LINES + 2
    assert got[0] == (1, "first line") and got[-1] == (2_000_002, "last line")
