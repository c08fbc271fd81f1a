"""Open an input file (compressed or not) and read it as bounded, decoded lines.

`.gz`, `.bz2`, `.xz` and `.zst` are decompressed on the fly, in bounded chunks, so a small file
that expands to gigabytes is read like any large file. A line is read at most MAX_RECORD_BYTES
at a time: a longer one is skipped to its end without being held, and counted. Text is decoded
with the `--encoding` (UTF-8 by default); a UTF-8 byte-order mark is dropped, CRLF ends are
stripped with the rest of the white space, and invalid bytes are replaced and counted, or an
error under `--strict`.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from bertcli.errors import DataError, UsageError
from bertcli.readers.base import MAX_RECORD_BYTES, InputCounts

UTF8_BOM = "\ufeff"


def _open_zstd(raw: BinaryIO) -> BinaryIO:
    try:
        import zstandard
    except ImportError:
        raise UsageError("reading .zst files needs the zstandard package: pip install 'bertcli[zstd]'") from None
    # read_across_frames: files written by `zstd` of concatenated inputs hold several frames.
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))


# Each opener wraps an already open binary file. GzipFile takes it by keyword: its first
# positional parameter is a file *name*.
COMPRESSED = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),
    ".zst": _open_zstd,
}


def decompression_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError, zlib.error)
    try:
        import zstandard
        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    return errors


def open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """Return (decoded stream, raw file); the raw file's position measures progress."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    opener = COMPRESSED.get(path.suffix.lower())
    try:
        return (opener(raw) if opener else raw), raw
    except BaseException:
        raw.close()
        raise


def check_encoding(encoding: str) -> str:
    """The codec's canonical name; lines are split on b"\\n", so it must be ASCII-compatible."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise UsageError(f"--encoding {encoding} is not an encoding Python knows; try utf-8, latin-1 or cp1252") from None
    if "\n".encode(info.name) != b"\n" or "a".encode(info.name) != b"a":
        raise UsageError(f"--encoding {encoding} is not ASCII-compatible (lines could not be found in it); "
                         f"convert the file to UTF-8 first, e.g. iconv -f {encoding} -t utf-8")
    return info.name


def read_lines(path: Path, counts: InputCounts, encoding: str, strict: bool, progress,
               done_before: int) -> Iterator[tuple[int, str]]:
    """Yield (line number, stripped text) for every line of a file, over-long ones skipped.

    `progress.bytes_done` is kept up to date with the raw (compressed) bytes read.
    """
    stream, raw = open_binary(path)
    utf8 = encoding == "utf-8"
    with raw, stream:
        try:
            lineno = 0
            while data := stream.readline(MAX_RECORD_BYTES + 1):
                lineno += 1
                if len(data) > MAX_RECORD_BYTES and not data.endswith(b"\n"):
                    _skip_to_line_end(stream)
                    counts.skip(f"{path}:{lineno}", f"a line longer than {MAX_RECORD_BYTES // 2**20} MiB")
                    continue
                try:
                    text = data.decode(encoding)
                except UnicodeDecodeError:
                    text = _invalid(path, lineno, data, encoding, strict, counts)
                if lineno == 1 and utf8 and text.startswith(UTF8_BOM):
                    # Editors on Windows start files with a byte-order mark; it is not text and
                    # str.strip() keeps it.
                    text = text[1:]
                if lineno & 1023 == 0:
                    progress.bytes_done = done_before + raw.tell()
                yield lineno, text.strip()
        except decompression_errors() as e:  # zlib.error: corrupt gzip data
            raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt") from None


def _skip_to_line_end(stream: BinaryIO) -> None:
    while (chunk := stream.readline(MAX_RECORD_BYTES)) and not chunk.endswith(b"\n"):
        pass


def _invalid(path: Path, lineno: int, data: bytes, encoding: str, strict: bool, counts: InputCounts) -> str:
    where = f"{path}:{lineno}"
    name = "UTF-8" if encoding == "utf-8" else encoding
    if strict:
        raise DataError(f"{where}: invalid {name}; fix the file, give its --encoding, "
                        "or drop --strict to replace bad bytes")
    counts.invalid_lines += 1
    if counts.first_invalid is None:
        counts.first_invalid = where
    return data.decode(encoding, errors="replace")
