"""The corpus: which inputs to read, in which order and format, and what reading them found.

Inputs may be files, directories (their text, JSON Lines and Parquet files, recursively,
compressed ones too), globs, and a Hugging Face dataset (`--dataset`). Each input is read by
the reader for its format (bertcli/readers/); `Corpus.documents()` strings them together in a
fixed order, so the same inputs always give the same documents. `ReadStats` holds the counts
per input, for the manifest and for the warnings about classic mistakes. This module only reads;
it never tokenizes.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bertcli.console import shown, warn
from bertcli.errors import UsageError
from bertcli.fsutil import OWNER_FILE
from bertcli.readers import DATASET_FORMAT, NEEDS_SEGMENTER, READERS, check_format, format_of, hf, wanted_suffixes
from bertcli.readers.base import LONG_BLOCK_CHARS, MAX_DOCUMENT_CHARS, InputCounts, ReaderOptions
from bertcli.readers.streams import check_encoding, read_lines
from bertcli.tokenizer.base import META_FILE

GLOB_CHARS = set("*?[")


def expand_inputs(inputs: list[str] | None, input_format: str | None = None, allow_empty: bool = False) -> list[Path]:
    """Turn the command line's INPUT arguments into a sorted, de-duplicated list of files."""
    if not inputs:
        if allow_empty:
            return []
        raise UsageError("no INPUT given; pass one or more text files, directories or globs (or --dataset)")
    suffixes = wanted_suffixes(check_format(input_format))
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = _input_files(path, suffixes)
            if not found:
                plain = [f"*{s}" for s in suffixes if s.count(".") == 1]
                others = f" (nor {', '.join(plain[1:])})" if len(plain) > 1 else ""
                raise UsageError(f"input directory {item} holds no {plain[0]} files{others}; compressed "
                                 ".gz/.bz2/.xz/.zst ones count too")
            files.extend(found)
        elif GLOB_CHARS & set(item):
            # A pattern may name directories too (`corpora/*`); they expand as a directory does.
            found = []
            for match in sorted(Path(p) for p in glob.glob(item, recursive=True)):
                found.extend(_input_files(match, suffixes) if match.is_dir() else [match] if match.is_file() else [])
            if not found:
                raise UsageError(f"input pattern {item} matches no file; check the pattern and quote it")
            files.extend(found)
        elif path.exists():
            raise UsageError(f"input {item} is not a regular file or directory (a FIFO or device?); give a file")
        else:
            raise UsageError(f"input {item} does not exist; check the path")
    unique: dict[Path, None] = {}
    for f in files:
        unique.setdefault(f.resolve(), None)
    return list(unique)


# A directory holding one of these is bertcli's own output (a tokenizer, data, a run, an export):
# its vocab.txt or JSON files are never corpus text.
ARTIFACT_MARKERS = (OWNER_FILE, META_FILE)


def _input_files(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The input files under a directory, recursively, in a stable order, bertcli's own outputs
    inside it left out (and said, once per command)."""
    found, skipped = [], []
    for top, dirs, names in os.walk(directory):
        if any(m in names for m in ARTIFACT_MARKERS):
            skipped.append(top)
            dirs[:] = []
            continue
        dirs.sort()
        found.extend(Path(top) / n for n in names if n.lower().endswith(suffixes) and (Path(top) / n).is_file())
    if skipped:
        listed = ", ".join(shown(d, 80) for d in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        warn(f"input directory {shown(directory)}: left out {len(skipped)} bertcli output director"
             f"{'y' if len(skipped) == 1 else 'ies'} inside it ({listed}): a tokenizer's or a data directory's files "
             "are not text; move them out, or name a file in them as INPUT to read it")
    return sorted(found)


@dataclass
class ReadStats:
    """What one pass over the corpus found: sizes for progress, counts per input for the manifest."""

    total_bytes: int = 0
    bytes_done: int = 0
    files: list[Path] = field(default_factory=list)
    inputs: list[InputCounts] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return sum(c.records for c in self.inputs)

    @property
    def invalid_utf8_lines(self) -> int:
        return sum(c.invalid_lines for c in self.inputs)

    def invalid_utf8_message(self) -> str | None:
        if not self.invalid_utf8_lines:
            return None
        first = next(c.first_invalid for c in self.inputs if c.first_invalid)
        return (f"{self.invalid_utf8_lines} line(s) had invalid UTF-8, replaced with U+FFFD "
                f"(first at {first}); pass --strict to make this an error")

    def warnings(self, options: ReaderOptions) -> list[str]:
        """The classic mistakes, one message each, naming the input (invalid bytes aside)."""
        out = []
        for c in self.inputs:
            if c.records_skipped:
                out.append(f"{c.records_skipped} of {c.records} record(s) of {c.input} were skipped "
                           f"(first at {c.first_skipped}: {c.first_skip_reason}); pass --strict to stop at the first")
            if c.long_blocks:
                hint = ("is this free text? pass --input-format text" if c.format == "lines"
                        else "does the text lack punctuation, or is it not in --language?")
                out.append(f"{c.long_blocks} sentence(s) in {c.input} are blocks of more than {LONG_BLOCK_CHARS:,} "
                           f"characters with no sentence boundary (first at {c.first_long_block}): {hint}")
            if c.records and c.empty_records > 0.5 * c.records:
                out.append(f"{c.empty_records} of {c.records} records of {c.input} have an empty "
                           f"{options.text_field!r} field: is --text-field the field with the text?")
            if c.documents_cut:
                out.append(f"{c.documents_cut} document(s) of {c.input} grew past {MAX_DOCUMENT_CHARS:,} characters "
                           "and were cut in pieces: separate documents with blank lines")
        return out


@dataclass
class ReadContext:
    """What a reader gets besides its source."""

    options: ReaderOptions
    counts: InputCounts
    encoding: str
    strict: bool
    segmenter: object
    progress: ReadStats
    done_before: int


class Corpus:
    """Iterate the documents (or sentences) of a list of inputs, tracking progress and counts."""

    def __init__(self, files: list[Path], strict: bool = False, options: ReaderOptions | None = None):
        self.files = list(files)
        self.strict = strict
        self.options = options or ReaderOptions()
        self.encoding = check_encoding(self.options.encoding)
        check_format(self.options.input_format)
        self.formats = [format_of(f, self.options.input_format) for f in self.files]
        if self.options.dataset is None and not self.files:
            raise UsageError("no INPUT given; pass one or more text files, directories or globs (or --dataset)")
        self.stats = ReadStats(total_bytes=sum(f.stat().st_size for f in self.files), files=self.files)
        self._segmenter = None
        if NEEDS_SEGMENTER & set(self.formats + ([DATASET_FORMAT] if self.options.dataset else [])):
            self._segmenter = self.segmenter()

    def segmenter(self):
        if self._segmenter is None:
            from bertcli.segment import Segmenter
            self._segmenter = Segmenter(self.options.sentence_splitter, self.options.language)
        return self._segmenter

    def describe_format(self) -> str:
        kinds = sorted(set(self.formats + ([DATASET_FORMAT] if self.options.dataset else [])))
        return kinds[0] if len(kinds) == 1 else "+".join(kinds)

    def fingerprint(self) -> list[dict]:
        """Inputs and their sizes: what --resume checks to be the same."""
        entries = [{"path": str(f), "bytes": f.stat().st_size} for f in self.files]
        if self.options.dataset:
            entries.append(hf.fingerprint(self.options))
        return entries

    def _contexts(self) -> Iterator[tuple[object, str, ReadContext]]:
        # The stats describe this pass; a second pass must not count twice. Reset in place: a
        # progress display may hold the object.
        stats = self.stats
        stats.bytes_done = 0
        stats.inputs = []
        done_before = 0
        for path, fmt in zip(self.files, self.formats):
            counts = InputCounts(str(path), fmt)
            stats.inputs.append(counts)
            yield path, fmt, ReadContext(self.options, counts, self.encoding, self.strict, self._segmenter,
                                         stats, done_before)
            done_before += path.stat().st_size
            stats.bytes_done = done_before
        if self.options.dataset:
            counts = InputCounts(hf.describe(self.options), DATASET_FORMAT)
            stats.inputs.append(counts)
            yield self.options, DATASET_FORMAT, ReadContext(self.options, counts, self.encoding, self.strict,
                                                            self._segmenter, stats, done_before)

    def documents(self) -> Iterator[list[str]]:
        """Lists of sentences, input after input; never an empty document."""
        for source, fmt, ctx in self._contexts():
            reader = hf.documents if fmt == DATASET_FORMAT else READERS[fmt]
            yield from reader(source, ctx)

    def sentences(self) -> Iterator[str]:
        """Every sentence of every document (what tokenizer training sees)."""
        for doc in self.documents():
            yield from doc

    def lines(self) -> Iterator[str]:
        """The stripped lines of the files, whatever their format; every file ends with ""."""
        for path, _, ctx in self._contexts():
            for _, line in read_lines(path, ctx.counts, ctx.encoding, ctx.strict, ctx.progress, ctx.done_before):
                ctx.counts.records += 1
                yield line
            yield ""

    def manifest_entries(self) -> list[dict]:
        return [c.manifest_entry() for c in self.stats.inputs]
