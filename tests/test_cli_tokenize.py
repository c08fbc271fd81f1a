"""`bertcli tokenize` as a user runs it: exit codes, one-line messages, the files it writes.

Most cases call `bertcli.cli.main(argv)` in this process (fast); a few run `python -m bertcli`
in a subprocess to cover the real entry point.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys

import pytest

from bertcli import __version__
from bertcli.cli import main
from bertcli.tokenizer import META_FILE, MODEL_FILE, SPECIAL_TOKENS, Tokenizer
from conftest import SAMPLE, run_cli


def bertcli_main(capsys, *args) -> tuple[int, str, str]:
    """Run bertcli in this process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(map(str, args)))
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_botchan_at_4000_gives_special_ids_0_to_4(tmp_path, capsys):
    code, out, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", tmp_path / "tok", "--vocab-size", 4000)
    assert code == 0 and "Traceback" not in err
    tok = Tokenizer.load(tmp_path / "tok")
    assert tok.vocab_size == 4000
    assert tok.pieces(range(5)) == list(SPECIAL_TOKENS.values())
    assert json.loads((tmp_path / "tok" / META_FILE).read_text())["options"]["model_type"] == "unigram"  # the default
    assert "tokenizer written to" in err and "4,000" in err  # the summary goes to stderr
    assert out == ""  # stdout stays clean for machine-readable output


def test_same_seed_and_threads_give_a_byte_identical_model(tmp_path, capsys):
    for name in ("a", "b"):
        assert bertcli_main(capsys, "tokenize", SAMPLE, "--out", tmp_path / name, "--vocab-size", 3000,
                   "--threads", 2, "--seed", 99)[0] == 0
    assert (tmp_path / "a" / MODEL_FILE).read_bytes() == (tmp_path / "b" / MODEL_FILE).read_bytes()


def test_compressed_files_directories_and_globs(tmp_path, capsys):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    third = len(lines) // 3
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "part1.txt.gz").write_bytes(gzip.compress(b"".join(lines[:third])))
    (tmp_path / "in" / "sub" / "part2.txt.bz2").write_bytes(bz2.compress(b"".join(lines[third:2 * third])))
    (tmp_path / "in" / "sub" / "ignored.md").write_text("not part of the corpus")
    (tmp_path / "part3.txt.xz").write_bytes(lzma.compress(b"".join(lines[2 * third:])))
    code, _, err = bertcli_main(capsys, "tokenize", tmp_path / "in", str(tmp_path / "*.xz"), "--out", tmp_path / "tok",
                       "--vocab-size", 2000, "--threads", 1)
    assert code == 0, err
    meta = json.loads((tmp_path / "tok" / META_FILE).read_text())
    assert meta["sentences_seen"] == 2916  # every sentence of botchan, and nothing of ignored.md


@pytest.mark.parametrize("args, code, expected", [
    (["missing.txt"], 2, "input {tmp}/missing.txt does not exist"),
    (["*.nothing"], 2, "input pattern {tmp}/*.nothing matches no file"),
    (["emptydir"], 2, "input directory {tmp}/emptydir holds no *.txt files"),
    (["empty.txt"], 2, "has no non-empty lines"),
    (["small.txt", "--vocab-size", "50"], 2, "--vocab-size 50 is below the"),
    (["small.txt", "--model-type", "word"], 2, "--model-type 'word' is not one of bpe, unigram, wordpiece"),
    (["small.txt", "--character-coverage", "0.5"], 2, "--character-coverage 0.5 is out of range: give a number from 0.98 to 1"),
    (["small.txt", "--threads", "-2"], 2, "--threads -2 is out of range: give an integer from 0 to 256"),
    (["small.txt", "--seed", "-1"], 2, "--seed -1 is out of range: give an integer from 0 to 4,294,967,295"),
    (["bad.txt", "--strict"], 1, "{tmp}/bad.txt:2: invalid UTF-8"),
])
def test_bad_input_is_one_line_naming_the_problem(tmp_path, capsys, args, code, expected):
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "small.txt").write_text(SAMPLE.read_text(encoding="utf-8")[:20000])
    (tmp_path / "bad.txt").write_bytes(b"fine\nbroken \xff\n")
    argv = [str(tmp_path / args[0]), *args[1:]]
    got, _, err = bertcli_main(capsys, "tokenize", *argv, "--out", tmp_path / "tok")
    assert got == code
    assert expected.format(tmp=tmp_path) in one_error_line(err)
    assert not (tmp_path / "tok").exists()  # a failed run leaves no tokenizer behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_unigram_cannot_reach_8000_on_botchan_and_says_what_can(tmp_path, capsys):
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", tmp_path / "tok", "--vocab-size", 8000,
                       "--model-type", "unigram")
    assert code == 2
    assert "--vocab-size 8000 is more than this corpus supports; the largest that works is" in one_error_line(err)


def test_invalid_utf8_is_replaced_and_warned_about_once(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(SAMPLE.read_bytes()[:30000] + b"\nbroken \xff here\nand \xfe again\n")
    code, _, err = bertcli_main(capsys, "tokenize", bad, "--out", tmp_path / "tok", "--vocab-size", 500)
    assert code == 0 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "2 line(s) had invalid UTF-8" in warnings[0] and f"{bad}:" in warnings[0]


def test_non_empty_out_dir_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "old.txt").write_text("x")
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", out, "--vocab-size", 500)
    assert code == 2 and f"--out {out} is not empty; pass --overwrite" in one_error_line(err)
    assert (out / "old.txt").exists()
    # --overwrite replaces only a tokenizer bertcli made: the user's directory stays as it was
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", out, "--vocab-size", 500, "--overwrite")
    assert code == 2 and "was not made by bertcli" in one_error_line(err)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_overwrite_replaces_a_tokenizer_bertcli_made(tmp_path, capsys):
    out = tmp_path / "tok"
    code, _, _ = bertcli_main(capsys, "tokenize", SAMPLE, "--out", out, "--vocab-size", 400)
    assert code == 0 and Tokenizer.load(out).vocab_size == 400
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", out, "--vocab-size", 500, "--overwrite")
    assert code == 0, err
    assert Tokenizer.load(out).vocab_size == 500
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_full_disk_is_one_line_and_leaves_nothing_behind(small_fs, capsys):
    disk = small_fs(200)  # spm.model alone is ~370 KB at this vocabulary
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", disk / "tok", "--vocab-size", 2000)
    assert code == 1
    assert f"cannot write {disk / '.tmp-tok.'}" in one_error_line(err) and "free some space" in err
    assert list(disk.iterdir()) == []


def test_out_under_a_file_is_one_line_before_any_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE, "--out", tmp_path / "file" / "tok")
    line = one_error_line(err)
    assert code == 2 and f"--out {tmp_path / 'file' / 'tok'}: cannot write there" in line and "is a file" in line


def test_missing_out_option_is_a_usage_error(tmp_path, capsys):
    code, _, err = bertcli_main(capsys, "tokenize", SAMPLE)
    assert code == 2 and "--out" in err and "Traceback" not in err


def test_the_real_entry_point_reports_errors_in_one_line(tmp_path):
    proc = run_cli("tokenize", tmp_path / "missing.txt", "--out", tmp_path / "tok")
    assert proc.returncode == 2
    assert f"input {tmp_path / 'missing.txt'} does not exist" in one_error_line(proc.stderr)


def test_version(capsys):
    code, out, _ = bertcli_main(capsys, "--version")
    assert code == 0 and out.strip() == f"bertcli {__version__}"


def test_python_m_bertcli_help_lists_tokenize():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "tokenize" in proc.stdout and "Traceback" not in proc.stderr


def test_tokenize_help_shows_its_options():
    proc = run_cli("tokenize", "--help")
    assert proc.returncode == 0
    for option in ("--vocab-size", "--model-type", "--lowercase", "--character-coverage", "--byte-fallback",
                   "--input-sentence-size", "--threads", "--seed", "--strict", "--overwrite"):
        assert option in proc.stdout


def test_tokenize_does_not_import_torch(tmp_path):
    """torch takes seconds to import; the tokenizer needs none of it."""
    code = ("import sys; from bertcli.cli import main\n"
            f"try: main(['tokenize', {str(SAMPLE)!r}, '--out', {str(tmp_path / 'tok')!r}, '--vocab-size', '300'])\n"
            "except SystemExit as e: print(e.code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["0", "False"], proc.stderr
