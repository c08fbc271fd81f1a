"""make-data end to end: the manifest, determinism across workers, resume, windows, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import bertcli.make_data.pool as pool_module
import bertcli.make_data.writer as writer_module
from bertcli.corpus import Corpus
from bertcli.errors import DataError, UsageError
from bertcli.fsutil import OWNER_FILE, TOKEN, DirLock, mark_owned
from bertcli.make_data import MakeDataOptions, make_data, read_windows
from bertcli.shards import PretrainingData
from bertcli.tokenizer import Tokenizer
from conftest import SAMPLE, run_cli

SMALL = dict(window_chars=30_000, shard_size=300, dupe_factor=1, validation_fraction=0.1, max_seq_length=64)


def make(out: Path, tokenizer_dir: Path, files=(SAMPLE,), resume=False, **options) -> dict:
    return make_data(list(files), tokenizer_dir, out, MakeDataOptions(**options), resume=resume, show_progress=False)


def output_files(d: Path) -> dict[str, bytes]:
    """Every file of a data directory, the manifest without its timing (the ownership marker is unique per run)."""
    files = {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != OWNER_FILE}
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("seconds")
    manifest.pop("cpu_seconds")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def error_line(err: str) -> str:
    """The single error line of a failed command; no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentences(n: int, words: int = 6, start: int = 0) -> list[str]:
    vocabulary = SAMPLE.read_text(encoding="utf-8").split()
    return [" ".join(vocabulary[(start + i) * words:(start + i + 1) * words]) + "." for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The manifest and the data

def test_manifest_has_the_documented_keys_and_consistent_stats(data_dir, tokenizer_dir):
    m = json.loads((data_dir / "manifest.json").read_text())
    tok = Tokenizer.load(tokenizer_dir)
    assert m["format_version"] == 2 and m["tokenizer"]["dir"] == "tokenizer"
    assert m["tokenizer"]["sha256"] == tok.sha256 and m["tokenizer"]["vocab_size"] == tok.vocab_size
    assert m["tokenizer"]["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert m["options"]["max_seq_length"] == 64 and m["options"]["max_predictions"] == 10
    for split in ("train", "validation"):
        info = m["splits"][split]
        data = PretrainingData(data_dir, split)
        assert info["instances"] == len(data) > 0
        assert sum(s["instances"] for s in info["shards"]) == info["instances"]
        assert all(set(s) >= {"file", "instances", "sha256"} for s in info["shards"])
        examples = [data[i] for i in range(len(data))]
        lengths = np.array([len(e.input_ids) for e in examples])
        stats = info["stats"]
        assert info["tokens"] == lengths.sum()
        assert stats["mean_length"] == pytest.approx(lengths.mean())
        assert stats["padding_fraction"] == pytest.approx(1 - lengths.mean() / 64)
        assert stats["random_next_fraction"] == pytest.approx(np.mean([e.next_sentence_label for e in examples]))
        assert stats["masked_per_instance"] == pytest.approx(np.mean([len(e.masked_ids) for e in examples]))
        assert stats["fallback_pairs"] == 0
    assert 0.5 < m["splits"]["train"]["stats"]["random_next_fraction"] < 0.65


def test_instances_are_runs_of_the_corpus(data_dir, tokenizer_dir):
    """Unmasked, A and B are token runs of the tokenized corpus; an actual-next B follows A in it."""
    tok = Tokenizer.load(tokenizer_dir)
    lines = [line.strip() for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    stream = np.concatenate([np.array(ids, dtype=np.uint16) for ids in tok.encode(lines)]).tobytes()

    def is_run(ids: np.ndarray) -> bool:
        needle, at = ids.astype(np.uint16).tobytes(), stream.find(ids.astype(np.uint16).tobytes())
        while at != -1 and at % 2:
            at = stream.find(needle, at + 1)
        return at != -1

    data = PretrainingData(data_dir, "train")
    for i in range(0, len(data), max(1, len(data) // 60)):
        ex = data[i]
        ids = ex.original_ids()
        a, b = ids[1:ex.segment_b_start - 1], ids[ex.segment_b_start:-1]
        assert is_run(a) and is_run(b)
        if ex.next_sentence_label == 0 and len(a) + len(b) < 61:  # untruncated: A and B adjoin
            assert is_run(np.concatenate([a, b]))


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer_dir, tmp_path):
    make(tmp_path / "wwm", tokenizer_dir, workers=1, whole_word_mask=True, **dict(SMALL, window_chars=10**6))
    word_start = Tokenizer.load(tokenizer_dir).word_starts()  # True for "▁" pieces and specials
    data = PretrainingData(tmp_path / "wwm")
    continued = 0
    for i in range(len(data)):
        ex = data[i]
        ids, masked = ex.original_ids(), np.zeros(len(ex.input_ids) + 1, dtype=bool)
        masked[ex.masked_positions] = True
        for p in ex.masked_positions:
            if p + 1 < len(ids) - 1 and not word_start[ids[p + 1]]:  # the word goes on: so does the mask
                assert masked[p + 1]
                continued += 1
            if not word_start[ids[p]] and p - 1 != 0 and p - 1 != ex.segment_b_start - 1:
                assert masked[p - 1]  # a continuation piece is masked only with its word's start
        assert len(ex.masked_positions) <= 10
    assert continued > 100


def test_output_does_not_depend_on_the_number_of_workers(tokenizer_dir, tmp_path):
    make(tmp_path / "one", tokenizer_dir, workers=1, **SMALL)
    make(tmp_path / "two", tokenizer_dir, workers=2, **SMALL)
    one, two = output_files(tmp_path / "one"), output_files(tmp_path / "two")
    assert len([f for f in one if f.startswith("train/")]) > 3
    assert one == two


def test_seed_changes_the_output(tokenizer_dir, tmp_path):
    make(tmp_path / "a", tokenizer_dir, workers=1, **SMALL)
    make(tmp_path / "b", tokenizer_dir, workers=1, seed=1, **SMALL)
    a, b = output_files(tmp_path / "a"), output_files(tmp_path / "b")
    assert a["train/shard-00000.safetensors"] != b["train/shard-00000.safetensors"]


# ---------------------------------------------------------------------------------------------
# Resume

def interrupt_after(monkeypatch, shards: int, error=KeyboardInterrupt):
    real = writer_module.write_shard
    calls = []

    def flaky(*args, **kwargs):
        if len(calls) == shards:
            raise error()
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_shard", flaky)


def test_resume_keeps_finished_shards_and_matches_an_uninterrupted_run(tokenizer_dir, tmp_path, monkeypatch):
    options = dict(SMALL, shard_size=250)
    make(tmp_path / "full", tokenizer_dir, workers=1, **options)
    part = tmp_path / "part"
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        make(part, tokenizer_dir, workers=1, **options)
    monkeypatch.undo()
    progress = json.loads((part / "progress.json").read_text())
    assert not (part / "manifest.json").exists()
    finished = [part / s["file"] for s in progress["splits"]["train"]["shards"]]
    assert len(finished) == 3 and progress["splits"]["train"]["next_offset"] > 0  # stopped inside a window
    (part / "train" / f".tmp-shard-00003.safetensors.{TOKEN}.1").write_bytes(b"half written")  # a kill's leftover
    kept = {p: p.stat().st_mtime_ns for p in finished}

    make(part, tokenizer_dir, workers=2, resume=True, **options)
    assert {p: p.stat().st_mtime_ns for p in finished} == kept  # not rewritten
    assert output_files(part) == output_files(tmp_path / "full")


def test_resume_refuses_other_options_and_damaged_shards(tokenizer_dir, tmp_path, monkeypatch):
    part = tmp_path / "part"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        make(part, tokenizer_dir, workers=1, **SMALL)
    monkeypatch.undo()
    with pytest.raises(UsageError, match="different options"):
        make(part, tokenizer_dir, workers=1, resume=True, **dict(SMALL, seed=3))
    shard = part / "train" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match="shard-00000.safetensors is missing or damaged"):
        make(part, tokenizer_dir, workers=1, resume=True, **SMALL)
    assert shard.exists()  # a failed resume leaves the directory for the user to inspect


def test_resume_refuses_a_complete_or_foreign_directory(cli, tokenizer_dir, data_dir, tmp_path):
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", data_dir, "--resume")
    assert code == 2 and "already complete" in error_line(err)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", tmp_path / "other", "--resume")
    assert code == 2 and "no make-data progress" in error_line(err)


# ---------------------------------------------------------------------------------------------
# Windows

@pytest.mark.parametrize("documents, sizes", [(10, [3, 3, 4]), (11, [3, 3, 3, 2]), (2, [2]), (3, [3])])
def test_a_short_tail_joins_the_last_window(tmp_path, documents, sizes):
    doc = "x" * 99  # 99 characters: three documents make a window of 300
    corpus = write_lines(tmp_path / "c.txt", [line for _ in range(documents) for line in (doc, "")])
    windows = list(read_windows(Corpus([corpus]), MakeDataOptions(window_chars=297, validation_fraction=0)))
    assert [len(w[2]) for w in windows] == sizes
    assert [w[1] for w in windows] == list(range(len(sizes)))


# ---------------------------------------------------------------------------------------------
# Bad input: one line, the right exit code, nothing half-written

def test_empty_corpus_is_an_error_and_leaves_nothing(cli, tokenizer_dir, tmp_path):
    corpus = write_lines(tmp_path / "empty.txt", ["", "   ", ""])
    code, _, err = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out")
    assert code == 1 and "no training instances" in error_line(err) and "empty.txt" in error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_single_document_warns_that_every_random_pair_falls_back(cli, tokenizer_dir, tmp_path):
    corpus = write_lines(tmp_path / "one.txt", sentences(60))
    code, _, err = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out",
                       "--validation-fraction", "0", "--max-seq-length", "32")
    assert code == 0 and "single document" in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stats = manifest["splits"]["train"]["stats"]
    assert stats["random_next_fraction"] == 0 and stats["fallback_pairs"] > 0
    [warning] = manifest["warnings"]  # recorded for the report, as printed
    assert "single document" in warning and " ".join(warning.split()) in " ".join(err.split())


def test_one_sentence_documents_warn_and_are_all_random(cli, tokenizer_dir, tmp_path):
    corpus = write_lines(tmp_path / "lines.txt", [line for s in sentences(40) for line in (s, "")])
    code, _, err = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out",
                       "--validation-fraction", "0")
    assert code == 0 and "40 of 40 documents have a single sentence" in " ".join(err.split())
    stats = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"]["stats"]
    assert stats["random_next_fraction"] == 1.0


def test_long_lines_are_truncated_and_counted(cli, tokenizer_dir, tmp_path):
    corpus = write_lines(tmp_path / "long.txt", sentences(20) + [" ".join(sentences(30))] + sentences(20, start=50))
    code, _, err = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out",
                       "--max-seq-length", "32", "--validation-fraction", "0")
    assert code == 0 and "1 sentence(s) are longer than max_seq_length - 3 = 29 tokens" in " ".join(err.split())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["stats"]["long_sentences"] == 1
    data = PretrainingData(tmp_path / "out")
    assert max(len(data[i].input_ids) for i in range(len(data))) == 32


def test_invalid_utf8_is_replaced_and_counted_or_refused_with_strict(cli, tokenizer_dir, tmp_path):
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes("\n".join(sentences(30)).encode() + b"\nbad \xff\xfe bytes here.\n" + "\n".join(sentences(30, start=40)).encode())
    code, _, err = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out")
    assert code == 0 and "1 line(s) had invalid UTF-8" in " ".join(err.split())
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["invalid_utf8_lines"] == 1
    code, _, err = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "strict", "--strict")
    assert code == 1 and "bad.txt:31: invalid UTF-8" in error_line(err)
    assert not (tmp_path / "strict").exists()


def test_a_failed_run_empties_a_directory_it_did_not_create(cli, tokenizer_dir, tmp_path):
    corpus = write_lines(tmp_path / "empty.txt", [""])
    (tmp_path / "out").mkdir()
    code, _, _ = cli("make-data", corpus, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out")
    assert code == 1 and (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())


def test_missing_or_foreign_tokenizer(cli, tmp_path):
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tmp_path / "nope", "--out", tmp_path / "out")
    assert code == 2 and "nope does not exist" in error_line(err)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "vocab.txt").write_text("[PAD]\n")
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tmp_path / "foreign", "--out", tmp_path / "out")
    assert code == 2 and "is not a bertcli tokenizer" in error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value", [
    ("--max-seq-length", "7"), ("--max-seq-length", "513"), ("--masked-lm-prob", "0"), ("--masked-lm-prob", "1"),
    ("--masked-lm-prob", "-0.2"), ("--short-seq-prob", "1.5"), ("--short-seq-prob", "-0.1"),
    ("--max-predictions", "126"), ("--max-predictions", "0"), ("--dupe-factor", "0"), ("--validation-fraction", "1"),
])
def test_nonsensical_options_are_usage_errors(cli, tokenizer_dir, tmp_path, option, value):
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out", option, value)
    assert code == 2 and option in error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_non_empty_output_directory_is_refused(cli, tokenizer_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out")
    assert code == 2 and "is not empty" in error_line(err) and "--overwrite" in error_line(err)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_the_installed_command_prints_one_line_and_exits_2(tokenizer_dir, tmp_path):
    proc = run_cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", tmp_path / "out", "--max-seq-length", "4")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--max-seq-length 4 is out of range: give an integer from 8 to 512" in proc.stderr


# ---------------------------------------------------------------------------------------------
# --out: ownership, overlap with the inputs, one writer, what cannot be written

def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_overwrite_replaces_only_data_that_make_data_wrote(cli, tokenizer_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", mine, "--overwrite")
    assert code == 2 and "was not made by bertcli" in error_line(err)
    assert tree(mine) == {"notes.txt": b"mine"}

    run = tmp_path / "run"
    run.mkdir()
    mark_owned(run, "run")
    (run / "config.yaml").write_text("x: 1\n")
    before = tree(run)
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", run, "--overwrite")
    assert code == 2 and "holds a bertcli run, not a data" in error_line(err)
    assert tree(run) == before


def test_overwrite_keeps_the_old_data_until_the_new_is_complete(cli, tokenizer_dir, tmp_path):
    out = tmp_path / "data"
    make(out, tokenizer_dir, workers=1, **SMALL)
    before = tree(out)
    # options, tokenizer or inputs that fail: refused before anything is touched
    for bad in (["--max-seq-length", "4"], ["--tokenizer", tmp_path / "nope"]):
        code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--overwrite", *bad)
        assert code == 2 and tree(out) == before, err
    # a corpus that yields nothing fails at run time, after the work: the old data stays
    empty = write_lines(tmp_path / "empty.txt", [""])
    code, _, err = cli("make-data", empty, "--tokenizer", tokenizer_dir, "--out", out, "--overwrite", "--workers", "1")
    assert code == 1 and "no training instances" in error_line(err)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty.txt"]  # no temporary or lock file left
    # and a good run replaces it
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--overwrite", "--workers", "1",
                       "--seed", "9", "--max-seq-length", "64")
    assert code == 0, err
    assert tree(out) != before and json.loads((out / "manifest.json").read_text())["options"]["seed"] == 9
    assert (out / OWNER_FILE).is_file() and not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("where", ["corpus dir", "corpus parent", "tokenizer", "inside tokenizer"])
def test_an_out_that_holds_or_lies_in_an_input_is_refused_before_anything_is_touched(cli, tokenizer_dir, tmp_path, where):
    import shutil

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    corpus = corpus_dir / "text.txt"
    corpus.write_bytes(SAMPLE.read_bytes())
    tok = Path(shutil.copytree(tokenizer_dir, tmp_path / "tok"))
    out = {"corpus dir": corpus_dir, "corpus parent": tmp_path, "tokenizer": tok, "inside tokenizer": tok / "data"}[where]
    before = tree(tmp_path)
    code, _, err = cli("make-data", corpus, "--tokenizer", tok, "--out", out, "--overwrite")
    assert code == 2
    assert "holds the input" in error_line(err) or "lies inside the input" in error_line(err)
    assert tree(tmp_path) == before and not list(tmp_path.rglob("*lock"))


def test_a_second_writer_of_the_same_out_stops_at_once(cli, tokenizer_dir, tmp_path):
    out = tmp_path / "data"
    with DirLock(out, "make-data --out"):
        code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--workers", "1")
    assert code == 1 and f"pid {os.getpid()}" in error_line(err) and "is being written by" in error_line(err)
    assert not out.exists()


def test_a_read_only_file_system_is_named(cli, tokenizer_dir, small_fs):
    import subprocess

    fs = small_fs(64)
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", fs / "data")
    assert code == 2 and "read-only file system" in error_line(err)


def test_fifo_and_device_inputs_say_what_they_are(tokenizer_dir, tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match=r"pipe.txt is a named pipe \(FIFO\)"):
        make(tmp_path / "out", tokenizer_dir, files=[fifo])
    with pytest.raises(UsageError, match="/dev/null is a device"):
        make(tmp_path / "out", tokenizer_dir, files=[Path("/dev/null")])
    assert not (tmp_path / "out").exists()


def test_resume_never_deletes_files_it_did_not_write(tokenizer_dir, tmp_path, monkeypatch):
    part = tmp_path / "part"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        make(part, tokenizer_dir, workers=1, **SMALL)
    monkeypatch.undo()
    (part / "train" / "README.txt").write_text("the user's")
    make(part, tokenizer_dir, workers=1, resume=True, **SMALL)
    assert (part / "train" / "README.txt").read_text() == "the user's"


# ---------------------------------------------------------------------------------------------
# The worker pool

def test_the_pool_is_spawned_before_any_thread_starts(tokenizer_dir, tmp_path, monkeypatch):
    import multiprocessing
    import threading

    seen = []

    class Recording:
        def get_context(self, method):
            seen.append((method, threading.active_count()))
            return multiprocessing.get_context(method)

    monkeypatch.setattr(pool_module, "mp", Recording())
    threads_before = threading.active_count()
    make_data([SAMPLE], tokenizer_dir, tmp_path / "out", MakeDataOptions(**dict(SMALL, workers=2)), show_progress=True)
    assert seen == [("spawn", threads_before)]  # the progress bar's refresh thread starts after
    assert output_files(tmp_path / "out") == output_files(make_reference(tokenizer_dir, tmp_path))


def test_an_input_of_one_window_is_built_without_a_pool(tokenizer_dir, tmp_path, monkeypatch):
    from bertcli.make_data import pool as pool_module

    monkeypatch.setattr(pool_module, "mp", None)  # a pool would fail to start
    one_window = dict(SMALL, window_chars=10**6)  # the 253 kB sample in one window
    make(tmp_path / "two", tokenizer_dir, workers=2, **one_window)
    make(tmp_path / "one", tokenizer_dir, workers=1, **one_window)
    assert output_files(tmp_path / "two") == output_files(tmp_path / "one")
    assert pool_module.paying_workers(4, 3 * 10**6 + 1, 10**6) == 4 and pool_module.paying_workers(4, None, 10) == 4


def make_reference(tokenizer_dir, tmp_path) -> Path:
    make(tmp_path / "ref", tokenizer_dir, workers=1, **SMALL)
    return tmp_path / "ref"
