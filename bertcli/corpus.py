"""Read a text corpus in BERT's format: one sentence per line, a blank line between documents.

Inputs may be files, directories (their `*.txt` files, recursively, compressed ones too) and
globs; `.gz`, `.bz2` and `.xz` are decompressed on the fly. Lines are stripped. Invalid UTF-8 is
replaced and counted rather than fatal (a crawl of many GB with a few bad bytes should not
stop), unless `strict` asks for an error. This module only reads; it never tokenizes.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from bertcli.errors import DataError, UsageError

# Each opener wraps an already open binary file. GzipFile takes it by keyword: its first
# positional parameter is a file *name*.
COMPRESSED = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),
}
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.bz2", ".txt.xz")
GLOB_CHARS = set("*?[")
UTF8_BOM = "\ufeff"


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Turn the command line's INPUT arguments into a sorted, de-duplicated list of files."""
    if not inputs:
        raise UsageError("no INPUT given; pass one or more text files, directories or globs")
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = _text_files(path)
            if not found:
                raise UsageError(f"input directory {item} holds no *.txt files (compressed .gz/.bz2/.xz allowed)")
            files.extend(found)
        elif GLOB_CHARS & set(item):
            # A pattern may name directories too (`corpora/*`); they expand as a directory does.
            found = []
            for match in sorted(Path(p) for p in glob.glob(item, recursive=True)):
                found.extend(_text_files(match) if match.is_dir() else [match] if match.is_file() else [])
            if not found:
                raise UsageError(f"input pattern {item} matches no file; check the pattern and quote it")
            files.extend(found)
        else:
            raise UsageError(f"input {item} does not exist; check the path")
    unique: dict[Path, None] = {}
    for f in files:
        unique.setdefault(f.resolve(), None)
    return list(unique)


def _text_files(directory: Path) -> list[Path]:
    """The text files under a directory, recursively, in a stable order."""
    return sorted(p for p in directory.rglob("*") if p.name.lower().endswith(TEXT_SUFFIXES) and p.is_file())


def open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """Return (decoded stream, raw file); the raw file's position measures progress."""
    raw = open(path, "rb")
    opener = COMPRESSED.get(path.suffix.lower())
    return (opener(raw) if opener else raw), raw


@dataclass
class ReadStats:
    """What reading found: sizes for progress, invalid UTF-8 for one warning."""

    total_bytes: int = 0
    bytes_done: int = 0
    lines: int = 0
    invalid_utf8_lines: int = 0
    first_invalid: str | None = None
    files: list[Path] = field(default_factory=list)

    def invalid_utf8_message(self) -> str | None:
        if not self.invalid_utf8_lines:
            return None
        return (f"{self.invalid_utf8_lines} line(s) had invalid UTF-8, replaced with U+FFFD "
                f"(first at {self.first_invalid}); pass --strict to make this an error")


class Corpus:
    """Iterate lines or documents of a list of files, tracking progress and bad bytes."""

    def __init__(self, files: list[Path], strict: bool = False):
        self.files = files
        self.strict = strict
        self.stats = ReadStats(total_bytes=sum(f.stat().st_size for f in files), files=files)

    def lines(self) -> Iterator[str]:
        """Stripped lines; an empty string closes a document, and every file ends one."""
        # The stats describe this pass; a second pass must not count bad lines twice. Reset in
        # place: a progress display may hold the object.
        stats = self.stats
        stats.bytes_done = stats.lines = stats.invalid_utf8_lines = 0
        stats.first_invalid = None
        done_before = 0
        for path in self.files:
            try:
                stream, raw = open_binary(path)
            except OSError as e:
                raise DataError(f"cannot read {path}: {e.strerror}") from None
            with raw, stream:
                try:
                    for lineno, data in enumerate(stream, 1):
                        self.stats.lines += 1
                        try:
                            text = data.decode("utf-8")
                        except UnicodeDecodeError:
                            text = self._invalid(path, lineno, data)
                        if lineno == 1 and text.startswith(UTF8_BOM):
                            # Editors on Windows start files with a byte-order mark; it is not text
                            # and str.strip() keeps it.
                            text = text[1:]
                        if lineno & 1023 == 0:
                            self.stats.bytes_done = done_before + raw.tell()
                        yield text.strip()
                except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:  # zlib.error: corrupt gzip data
                    raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt") from None
            done_before += path.stat().st_size
            self.stats.bytes_done = done_before
            yield ""

    def _invalid(self, path: Path, lineno: int, data: bytes) -> str:
        where = f"{path}:{lineno}"
        if self.strict:
            raise DataError(f"{where}: invalid UTF-8; fix the file or drop --strict to replace bad bytes")
        self.stats.invalid_utf8_lines += 1
        if self.stats.first_invalid is None:
            self.stats.first_invalid = where
        return data.decode("utf-8", errors="replace")

    def sentences(self) -> Iterator[str]:
        """Non-empty lines only (what tokenizer training sees)."""
        return filter(None, self.lines())  # C-level filtering: no Python call per line

    def documents(self) -> Iterator[list[str]]:
        """Lists of sentences; runs of blank lines never make empty documents."""
        doc: list[str] = []
        for line in self.lines():
            if line:
                doc.append(line)
            elif doc:
                yield doc
                doc = []
        if doc:
            yield doc
