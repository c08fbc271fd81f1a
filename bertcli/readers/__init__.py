"""Readers: one small module per input format, each turning an input into documents.

A document is a list of sentences. Every reader has the same shape,
`documents(source, ctx) -> Iterator[list[str]]`, counts what it read in `ctx.counts`, and
leaves splitting, tokenizing and pairing to others. The format of a file comes from its suffix
(compression suffixes aside) unless `--input-format` names one.
"""

from __future__ import annotations

from pathlib import Path

from bertcli.errors import UsageError
from bertcli.readers import hf, jsonl, lines, parquet, text
from bertcli.readers.streams import COMPRESSED

READERS = {"lines": lines.documents, "text": text.documents, "jsonl": jsonl.documents,
           "parquet": parquet.documents}
DATASET_FORMAT = "dataset"
# What a directory or glob picks up, per format; `.txt` stays `lines` unless told otherwise, so
# existing corpora in BERT's layout read exactly as before.
SUFFIXES = {"lines": (".txt",), "text": (".txt",), "jsonl": (".jsonl", ".json", ".ndjson"), "parquet": (".parquet",)}
NEEDS_SEGMENTER = {"text", "jsonl", "parquet", DATASET_FORMAT}


def check_format(name: str | None) -> str | None:
    if name is not None and name not in READERS:
        raise UsageError(f"--input-format {name} is not one of: {', '.join(READERS)} "
                         "(use --dataset for a Hugging Face dataset)")
    return name


def format_of(path: Path, override: str | None) -> str:
    """The format to read a file as: the override, else its suffix; unknown suffixes read as lines."""
    if override:
        return override
    name = path.name.lower()
    for suffix in COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for fmt in ("jsonl", "parquet"):
        if name.endswith(SUFFIXES[fmt]):
            return fmt
    return "lines"


def wanted_suffixes(override: str | None) -> tuple[str, ...]:
    """File name endings a directory is searched for, compressed variants included."""
    plain = SUFFIXES[override] if override else tuple(dict.fromkeys(s for v in SUFFIXES.values() for s in v))
    return plain + tuple(s + c for s in plain if s != ".parquet" for c in COMPRESSED)


__all__ = ["READERS", "DATASET_FORMAT", "NEEDS_SEGMENTER", "check_format", "format_of", "wanted_suffixes", "hf"]
