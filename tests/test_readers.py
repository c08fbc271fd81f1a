"""readers/: each input format gives known documents and sentences, and counts what it skips."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pytest

from bertcli.corpus import Corpus, expand_inputs
from bertcli.errors import DataError, UsageError
from bertcli.readers.base import MAX_RECORD_BYTES, ReaderOptions

zstandard = pytest.importorskip("zstandard", reason="the zstd extra is part of the test environment")

COMPRESSORS = {"": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
               ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}

# A paragraph hard-wrapped as books are, with abbreviations a naive splitter gets wrong.
WRAPPED = ("The angler rose at five. He walked to the river,\r\n"
           "where Mr. Walton waited with two rods!\r\n"
           "Was the water too cold?\r\n")
TEXT = "\ufeff" + WRAPPED + "\r\n\r\n\r\n" + "A second paragraph. It has two sentences.\r\n"
TEXT_SENTENCES = [["The angler rose at five.", "He walked to the river, where Mr. Walton waited with two rods!",
                   "Was the water too cold?"], ["A second paragraph.", "It has two sentences."]]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read(files, **options) -> tuple[list[list[str]], Corpus]:
    strict = options.pop("strict", False)
    corpus = Corpus([Path(f) for f in files], strict=strict, options=ReaderOptions(**options))
    return list(corpus.documents()), corpus


# ---------------------------------------------------------------------------------------------
# text

def test_text_joins_wrapped_lines_splits_sentences_and_handles_bom_and_crlf(tmp_path):
    docs, corpus = read([write(tmp_path / "book.txt", TEXT)], input_format="text")
    assert docs == TEXT_SENTENCES
    (counts,) = corpus.stats.inputs
    assert (counts.format, counts.documents, counts.sentences, counts.records) == ("text", 2, 5, 7)


def test_text_document_per_file_makes_one_document_per_file(tmp_path):
    a = write(tmp_path / "a.txt", TEXT)
    b = write(tmp_path / "b.txt", "Only one. Two here.\n")
    docs, corpus = read([a, b], input_format="text", document_per_file=True)
    assert docs == [TEXT_SENTENCES[0] + TEXT_SENTENCES[1], ["Only one.", "Two here."]]
    assert [c.documents for c in corpus.stats.inputs] == [1, 1]


def test_txt_stays_lines_unless_told(tmp_path):
    f = write(tmp_path / "book.txt", TEXT)
    docs, corpus = read([f])
    assert corpus.formats == ["lines"]
    assert docs == [["The angler rose at five. He walked to the river,", "where Mr. Walton waited with two rods!",
                     "Was the water too cold?"], ["A second paragraph. It has two sentences."]]


def test_latin1_is_read_with_encoding_and_is_invalid_utf8_otherwise(tmp_path):
    f = write(tmp_path / "music.txt", "Caf\u00e9 music. Sch\u00f6n!\n".encode("latin-1"))
    docs, _ = read([f], input_format="text", encoding="latin-1")
    assert docs == [["Caf\u00e9 music.", "Sch\u00f6n!"]]
    docs, corpus = read([f], input_format="text")
    assert docs == [["Caf\ufffd music.", "Sch\ufffdn!"]]
    assert corpus.stats.invalid_utf8_lines == 1 and f"{f}:1" in corpus.stats.invalid_utf8_message()
    with pytest.raises(DataError, match=rf"{f}:1: invalid UTF-8.*--encoding"):
        read([f], input_format="text", strict=True)


@pytest.mark.parametrize("encoding", ["utf-16", "no-such-codec"])
def test_unusable_encodings_are_usage_errors(tmp_path, encoding):
    with pytest.raises(UsageError, match=f"--encoding {encoding}"):
        read([write(tmp_path / "a.txt", "x\n")], encoding=encoding)


def test_a_paragraph_without_boundary_is_counted_as_a_long_block(tmp_path):
    block = " ".join(["word"] * 2000)  # 10,000 characters, no full stop
    f = write(tmp_path / "a.txt", "Fine. Short.\n\n" + block + "\n")
    docs, corpus = read([f], input_format="text")
    assert docs == [["Fine.", "Short."], [block]]
    (message,) = corpus.stats.warnings(corpus.options)
    assert "1 sentence(s)" in message and f"{f}:3" in message and "no sentence boundary" in message


# ---------------------------------------------------------------------------------------------
# jsonl

RECORDS = [{"text": "First record. It has two sentences."},
           {"meta": {"body": "nested"}},
           "not json {",
           {"text": ""},
           {"text": 42},
           {"text": "Para one line one\nline two.\n\nPara two."}]


def jsonl_bytes(records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_jsonl_records_are_documents_and_bad_ones_are_counted_by_file_and_line(tmp_path, suffix):
    f = write(tmp_path / f"c.jsonl{suffix}", COMPRESSORS[suffix](jsonl_bytes(RECORDS)))
    docs, corpus = read([f])
    assert corpus.formats == ["jsonl"]
    assert docs == [["First record.", "It has two sentences."], ["Para one line one line two.", "Para two."]]
    (c,) = corpus.stats.inputs
    assert (c.records, c.records_skipped, c.empty_records, c.documents, c.sentences) == (6, 3, 1, 2, 4)
    (message,) = corpus.stats.warnings(corpus.options)
    assert f"3 of 6 record(s) of {f}" in message and f"{f}:2" in message and "no field 'text'" in message


def test_jsonl_dotted_field_reads_nested_keys(tmp_path):
    f = write(tmp_path / "c.json", jsonl_bytes([{"meta": {"body": "Deep. Down."}}, {"meta": {}}, {"meta": "flat"}]))
    docs, corpus = read([f], text_field="meta.body")
    assert docs == [["Deep.", "Down."]]
    assert corpus.stats.inputs[0].records_skipped == 2


@pytest.mark.parametrize("line, expected", [("not json {", "2: not valid JSON"), ('{"title": "x"}', "2: no field 'text'")])
def test_jsonl_strict_stops_at_the_first_bad_record(tmp_path, line, expected):
    f = write(tmp_path / "c.jsonl", jsonl_bytes([{"text": "Good."}, line]))
    with pytest.raises(DataError, match=f"{f}:{expected}"):
        read([f], strict=True)


def test_jsonl_field_missing_from_every_record_lists_the_keys(tmp_path):
    f = write(tmp_path / "c.jsonl", jsonl_bytes([{"title": "a", "body": "b"}] * 3))
    with pytest.raises(UsageError, match=r"no record has the field 'text'.*title, body.*--text-field") as err:
        read([f])
    assert err.value.exit_code == 2


def test_a_json_array_is_not_json_lines(tmp_path):
    f = write(tmp_path / "c.json", '[\n{"text": "a"}\n]\n')
    with pytest.raises(UsageError, match="one JSON array, not JSON Lines"):
        read([f])


def test_empty_field_for_most_records_warns(tmp_path):
    f = write(tmp_path / "c.jsonl", jsonl_bytes([{"text": " "}] * 3 + [{"text": "Some text here."}]))
    docs, corpus = read([f])
    assert docs == [["Some text here."]]
    (message,) = corpus.stats.warnings(corpus.options)
    assert f"3 of 4 records of {f} have an empty 'text' field" in message


# ---------------------------------------------------------------------------------------------
# parquet

pa = pytest.importorskip("pyarrow", reason="the parquet extra is part of the test environment")
import pyarrow.parquet as pq  # noqa: E402


def test_parquet_reads_every_row_group_in_order(tmp_path):
    texts = [f"Row {i} begins. Row {i} ends." for i in range(10)] + [None, ""]
    table = pa.table({"id": list(range(12)), "text": texts,
                      "meta": [{"body": f"Body {i}."} for i in range(12)]})
    f = tmp_path / "c.parquet"
    pq.write_table(table, f, row_group_size=3)
    assert pq.ParquetFile(f).num_row_groups == 4
    docs, corpus = read([f])
    assert docs == [[f"Row {i} begins.", f"Row {i} ends."] for i in range(10)]
    (c,) = corpus.stats.inputs
    assert (c.format, c.records, c.records_skipped, c.empty_records, c.documents) == ("parquet", 12, 1, 1, 10)
    assert c.first_skipped == f"{f}:row 11"
    docs, _ = read([f], text_field="meta.body")
    assert docs == [[f"Body {i}."] for i in range(12)]


def test_parquet_unknown_column_lists_the_columns(tmp_path):
    f = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [1], "content": ["x"]}), f)
    with pytest.raises(UsageError, match=r"no column 'text'; its columns are id, content: pass --text-field"):
        read([f])


def test_damaged_parquet_is_a_data_error(tmp_path):
    f = write(tmp_path / "c.parquet", b"PAR1 this is not parquet PAR1")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read([f])


# ---------------------------------------------------------------------------------------------
# inputs, limits

def test_directories_pick_up_every_format_and_the_override_narrows_them(tmp_path):
    d = tmp_path / "d"
    files = [write(d / "a.txt", "x"), write(d / "b.jsonl.zst", b""), write(d / "c.parquet", b""),
             write(d / "e.json.gz", b"")]
    write(d / "notes.md", "no")
    assert expand_inputs([str(d)]) == sorted(f.resolve() for f in files)
    assert expand_inputs([str(d)], "jsonl") == [files[1].resolve(), files[3].resolve()]
    with pytest.raises(UsageError, match="--input-format csv is not one of"):
        expand_inputs([str(d)], "csv")


def test_an_over_long_line_is_skipped_counted_and_named(tmp_path):
    f = write(tmp_path / "a.txt", b"before\n" + b"x" * (MAX_RECORD_BYTES + 10) + b"\nafter\n")
    docs, corpus = read([f])
    assert docs == [["before", "after"]]
    (message,) = corpus.stats.warnings(corpus.options)
    assert f"{f}:2" in message and "longer than 8 MiB" in message


def test_a_document_without_blank_lines_is_cut_to_bound_memory(tmp_path, monkeypatch):
    import bertcli.readers.base as base
    monkeypatch.setattr(base, "MAX_DOCUMENT_CHARS", 100)
    f = write(tmp_path / "a.txt", "".join(f"sentence number {i:03d}\n" for i in range(20)))  # 19 characters each
    docs, corpus = read([f])
    assert [len(d) for d in docs] == [6, 6, 6, 2]
    assert corpus.stats.inputs[0].documents_cut == 3


def test_corrupt_zstd_is_one_data_error(tmp_path):
    packed = bytearray(zstandard.ZstdCompressor().compress(b"some text\n" * 5000))
    packed[20:40] = bytes(b ^ 0x55 for b in packed[20:40])
    f = write(tmp_path / "bad.txt.zst", bytes(packed))
    with pytest.raises(DataError, match=r"bad\.txt\.zst.*cannot decompress"):
        read([f])
