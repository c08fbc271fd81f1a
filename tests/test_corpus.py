"""corpus.py: input expansion, compressed files, blank lines, invalid UTF-8."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pytest

from bertcli.corpus import Corpus, expand_inputs
from bertcli.errors import DataError, UsageError

TEXT = "First sentence.\nSecond one.\n\n\nA new document.\n"
COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_compressed_file_reads_like_plain_text(tmp_path, suffix):
    plain = write(tmp_path / "a.txt", TEXT)
    packed = write(tmp_path / f"a.txt{suffix}", COMPRESSORS[suffix](TEXT.encode()))
    assert list(Corpus([packed]).lines()) == list(Corpus([plain]).lines())
    assert list(Corpus([packed]).sentences()) == ["First sentence.", "Second one.", "A new document."]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_corrupt_compressed_file_is_one_data_error_naming_it(tmp_path, suffix):
    packed = bytearray(COMPRESSORS[suffix](("some text to squeeze\n" * 5000).encode()))
    packed[30:60] = bytes(b ^ 0x55 for b in packed[30:60])  # damage the stream, keep the header
    bad = write(tmp_path / f"bad.txt{suffix}", bytes(packed))
    with pytest.raises(DataError, match=r"bad\.txt.*cannot decompress"):
        list(Corpus([bad]).lines())


def test_truncated_gzip_is_a_data_error(tmp_path):
    packed = gzip.compress(("line\n" * 10000).encode())
    bad = write(tmp_path / "cut.txt.gz", packed[: len(packed) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(Corpus([bad]).lines())


def test_blank_lines_close_documents_and_are_never_sentences(tmp_path):
    a = write(tmp_path / "a.txt", "\n\n  one  \r\ntwo\n\n\n\nthree\n   \n")
    b = write(tmp_path / "b.txt", "four\nfive")  # no final newline; the file still ends a document
    corpus = Corpus([a, b])
    assert list(corpus.sentences()) == ["one", "two", "three", "four", "five"]
    assert list(corpus.documents()) == [["one", "two"], ["three"], ["four", "five"]]


def test_byte_order_mark_is_not_text(tmp_path):
    f = write(tmp_path / "bom.txt", "\ufeffHello\nWorld\n".encode("utf-8"))
    assert list(Corpus([f]).sentences()) == ["Hello", "World"]


def test_invalid_utf8_is_replaced_counted_and_located(tmp_path):
    f = write(tmp_path / "bad.txt", b"good\nbad \xff byte\nfine\nworse \xfe\xfe\n")
    corpus = Corpus([f])
    assert list(corpus.sentences()) == ["good", "bad \ufffd byte", "fine", "worse \ufffd\ufffd"]
    assert corpus.stats.invalid_utf8_lines == 2
    message = corpus.stats.invalid_utf8_message()
    assert f"{f}:2" in message and "2 line(s)" in message and "--strict" in message
    list(corpus.sentences())  # a second pass reports the same, not twice as much
    assert corpus.stats.invalid_utf8_lines == 2


def test_valid_corpus_has_no_invalid_utf8_message(tmp_path):
    corpus = Corpus([write(tmp_path / "ok.txt", "ünïcödé\n")])
    list(corpus.lines())
    assert corpus.stats.invalid_utf8_message() is None


def test_strict_invalid_utf8_is_a_data_error_with_file_and_line(tmp_path):
    f = write(tmp_path / "bad.txt", b"good\nbad \xff byte\n")
    with pytest.raises(DataError, match=rf"{f}:2: invalid UTF-8.*--strict") as err:
        list(Corpus([f], strict=True).sentences())
    assert err.value.exit_code == 1


def test_progress_reaches_the_total(tmp_path):
    files = [write(tmp_path / f"{i}.txt", "x y z\n" * 3000) for i in range(2)]
    corpus = Corpus(files)
    list(corpus.lines())
    assert corpus.stats.bytes_done == corpus.stats.total_bytes == 2 * 3000 * 6


def test_directory_expands_to_its_text_files_recursively(tmp_path):
    wanted = [write(tmp_path / "d" / "a.txt", "a"), write(tmp_path / "d" / "sub" / "b.txt.gz", gzip.compress(b"b")),
              write(tmp_path / "d" / "sub" / "deeper" / "c.TXT.xz", lzma.compress(b"c"))]
    write(tmp_path / "d" / "notes.md", "not text")
    write(tmp_path / "d" / "model.bin", b"\0")
    assert sorted(expand_inputs([str(tmp_path / "d")])) == sorted(p.resolve() for p in wanted)


def test_glob_expands_files_and_directories_and_duplicates_are_dropped(tmp_path):
    a = write(tmp_path / "a.txt", "a")
    b = write(tmp_path / "b.txt.bz2", bz2.compress(b"b"))
    c = write(tmp_path / "sub" / "c.txt", "c")
    files = expand_inputs([str(tmp_path / "*.txt*"), str(a), str(tmp_path / "s*")])
    assert files == [a.resolve(), b.resolve(), c.resolve()]


def test_order_follows_the_command_line(tmp_path):
    a, b = write(tmp_path / "a.txt", "a"), write(tmp_path / "b.txt", "b")
    assert expand_inputs([str(b), str(a)]) == [b.resolve(), a.resolve()]


@pytest.mark.parametrize("make, pattern", [
    (lambda d: None, "missing.txt"),
    (lambda d: None, "*.nothing"),
    (lambda d: (d / "empty").mkdir(), "empty"),
])
def test_inputs_that_name_no_file_are_usage_errors_naming_the_input(tmp_path, make, pattern):
    make(tmp_path)
    item = str(tmp_path / pattern)
    with pytest.raises(UsageError, match="input") as err:
        expand_inputs([item])
    assert item in str(err.value) and err.value.exit_code == 2
