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

from bertcli.console import shown
from bertcli.errors import DataError, UsageError
from bertcli.readers.base import MAX_RECORD_BYTES, InputCounts

UTF8_BOM = "\ufeff"
NUL_SAMPLE_BYTES = 1 << 16  # how much of a file's start is checked for NUL bytes
# Past this many blank lines in a row the rest of the run is skipped a buffer at a time, not
# a line at a time: a 1 MB gzip of 1 GiB of newlines took 440 s as a billion empty lines.
BLANK_RUN_LINES = 64


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


def zstd_problem(raw: BinaryIO) -> str | None:
    """Why a .zst file is not a sequence of whole frames (RFC 8878), found by walking frame and
    block headers without decompressing: zstandard reads a truncated file as far as it goes and
    says nothing, where gzip, bz2 and xz raise."""
    start = raw.tell()
    try:
        while magic := raw.read(4):
            if len(magic) < 4:
                return "it ends inside a frame header"
            number = int.from_bytes(magic, "little")
            if number & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its size, then that many bytes
                size = raw.read(4)
                if len(size) < 4 or len(raw.read(int.from_bytes(size, "little"))) < int.from_bytes(size, "little"):
                    return "it ends inside a skippable frame"
                continue
            if number != 0xFD2FB528:
                return "it holds data that is not a zstd frame"
            descriptor = raw.read(1)
            if not descriptor:
                return "it ends inside a frame header"
            d = descriptor[0]
            single, checksum = d >> 5 & 1, d >> 2 & 1
            header = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + ((1 if single else 0), 2, 4, 8)[d >> 6]
            if len(raw.read(header)) < header:
                return "it ends inside a frame header"
            while True:
                block = raw.read(3)
                if len(block) < 3:
                    return "it ends inside a frame (truncated)"
                value = int.from_bytes(block, "little")
                last, kind, size = value & 1, value >> 1 & 3, value >> 3
                if kind == 3:
                    return "it holds a reserved block type (corrupt)"
                body = 1 if kind == 1 else size
                if len(raw.read(body)) < body:
                    return "it ends inside a block (truncated)"
                if last:
                    break
            if checksum and len(raw.read(4)) < 4:
                return "it ends inside a frame's checksum (truncated)"
        return None
    finally:
        raw.seek(start)


def open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """Return (decoded stream, raw file); the raw file's position measures progress."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    opener = COMPRESSED.get(path.suffix.lower())
    try:
        if opener is _open_zstd and (problem := zstd_problem(raw)):
            raise DataError(f"{path}: cannot decompress ({problem}); the file is truncated or corrupt")
        return (opener(raw) if opener else raw), raw
    except BaseException:
        raw.close()
        raise


def nul_problem(sample: bytes, encoding: str) -> str | None:
    """Text in an ASCII-compatible encoding has no NUL bytes; many of them mean UTF-16/32 or a binary
    file, which would be read as text between NULs (UTF-16 without a byte-order mark decodes as
    "valid" UTF-8 with a NUL after every ASCII letter)."""
    nuls = sample.count(0)
    if len(sample) < 16 or nuls * 20 < len(sample):  # under 5 %: a stray NUL is bad bytes, not another encoding
        return None
    even = sample[0::2].count(0)
    if even * 4 < nuls or sample[1::2].count(0) * 4 < nuls:
        guess = "UTF-16 (every other byte is NUL): convert it, e.g. iconv -f utf-16le -t utf-8"
    else:
        guess = "UTF-32 or a binary file"
    return f"{100 * nuls // len(sample)}% of its first bytes are NUL, which {encoding} text never has; it looks like {guess}"


def check_encoding(encoding: str) -> str:
    """The codec's canonical name. It must be a text encoding Python can decode with (not a
    transform such as rot13, base64, zlib or uu_codec, nor `undefined`), and ASCII-compatible:
    lines are split on b"\\n"."""
    name = shown(encoding, 40)
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, TypeError):
        raise UsageError(f"--encoding {name} is not an encoding Python knows; try utf-8, latin-1 or cp1252") from None
    if not getattr(info, "_is_text_encoding", True):
        raise UsageError(f"--encoding {name} is a {info.name} transform, not a text encoding; try utf-8, latin-1 "
                         "or cp1252")
    try:
        compatible = "\n".encode(info.name) == b"\n" and "a".encode(info.name) == b"a" and b"a\n".decode(info.name) == "a\n"
    except (UnicodeError, LookupError, ValueError, TypeError):
        raise UsageError(f"--encoding {name} cannot encode or decode text; try utf-8, latin-1 or cp1252") from None
    if not compatible:
        raise UsageError(f"--encoding {name} is not ASCII-compatible (lines could not be found in it); "
                         f"convert the file to UTF-8 first, e.g. iconv -f {name} -t utf-8")
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
            if problem := nul_problem(stream.peek(NUL_SAMPLE_BYTES)[:NUL_SAMPLE_BYTES], encoding):
                raise DataError(f"{path}: {problem}")
            lineno = blank_run = 0
            while data := stream.readline(MAX_RECORD_BYTES + 1):
                lineno += 1
                if data.isspace():
                    blank_run += 1
                    if blank_run >= BLANK_RUN_LINES:  # one blank line ends a document as well as a billion
                        lineno += _skip_blank_lines(stream)
                        continue
                else:
                    blank_run = 0
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


def _skip_blank_lines(stream: BinaryIO) -> int:
    """Consume the blank lines that follow, a buffer at a time; return how many there were."""
    skipped = 0
    while buffer := stream.peek(1 << 16):
        blank = len(buffer) - len(buffer.lstrip(b" \t\r\n\f\v"))
        cut = blank if blank == len(buffer) else buffer.rfind(b"\n", 0, blank) + 1
        if cut == 0:
            break
        skipped += buffer.count(b"\n", 0, cut)
        stream.read(cut)
    return skipped


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
