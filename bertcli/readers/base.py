"""What every reader shares: the options, the per-input counts, and the document size cap.

A reader turns one input (a file, or a Hugging Face dataset) into documents, each a list of
sentences, and counts what it read and what it had to skip in an `InputCounts`. Readers never
tokenize and never decide about splits; `corpus.Corpus` strings them together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

# One line or record longer than this is skipped (a counted warning names it): a 100 MB line
# or a decompression bomb must not be held in memory. Real records stay far below it; a whole
# Wikipedia article is a few hundred KB.
MAX_RECORD_BYTES = 8 * 1024 * 1024
# A document that grows past this many characters is cut into consecutive documents, so that a
# file without blank lines (or one huge record) cannot fill memory; pairs only lose their reach
# across the cut.
MAX_DOCUMENT_CHARS = 4_000_000
# A sentence of more characters than this is a block of text the segmenter found no boundary in.
LONG_BLOCK_CHARS = 5_000


@dataclass
class ReaderOptions:
    """How to read the inputs; everything here changes what make-data builds."""

    input_format: str | None = None  # None: by suffix
    text_field: str = "text"  # jsonl / parquet / datasets: dotted path to the text
    document_per_file: bool = False  # text: one document per file, blank lines separate paragraphs
    sentence_splitter: str = "blingfire"
    language: str = "en"
    encoding: str = "utf-8"
    dataset: str | None = None
    dataset_config: str | None = None
    dataset_split: str = "train"

    def recipe(self) -> dict:
        return asdict(self)


@dataclass
class InputCounts:
    """What one input gave: recorded per input in the manifest."""

    input: str
    format: str
    documents: int = 0
    sentences: int = 0
    records: int = 0  # lines for line-based formats, records for jsonl / parquet / datasets
    records_skipped: int = 0  # bad JSON, missing field, over-long line or record
    empty_records: int = 0  # a record whose field is present but blank
    invalid_lines: int = 0  # lines with bytes that are not valid in --encoding
    long_blocks: int = 0  # sentences longer than LONG_BLOCK_CHARS: no boundary found
    documents_cut: int = 0  # documents cut at MAX_DOCUMENT_CHARS
    first_skipped: str | None = field(default=None)  # file:line of the first skipped record
    first_skip_reason: str | None = field(default=None)
    first_invalid: str | None = field(default=None)
    first_long_block: str | None = field(default=None)

    def skip(self, where: str, reason: str) -> None:
        self.records_skipped += 1
        if self.first_skipped is None:
            self.first_skipped, self.first_skip_reason = where, reason

    def manifest_entry(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("first_")}


class DocumentBuilder:
    """Collects one document's sentences, cutting it at MAX_DOCUMENT_CHARS."""

    def __init__(self, counts: InputCounts, where: Callable[[], str]):
        self.counts, self.where = counts, where
        self.sentences: list[str] = []
        self.chars = 0

    def add(self, sentence: str) -> list[str] | None:
        """Add a sentence; return a full document when the cap forces one out."""
        if len(sentence) > LONG_BLOCK_CHARS:
            self.counts.long_blocks += 1
            if self.counts.first_long_block is None:
                self.counts.first_long_block = self.where()
        self.sentences.append(sentence)
        self.chars += len(sentence)
        if self.chars >= MAX_DOCUMENT_CHARS:
            self.counts.documents_cut += 1
            return self.finish()
        return None

    def finish(self) -> list[str] | None:
        """The document so far (None if empty), counted; the builder starts a new one."""
        doc, self.sentences, self.chars = self.sentences, [], 0
        if not doc:
            return None
        self.counts.documents += 1
        self.counts.sentences += len(doc)
        return doc


def emit(builder: DocumentBuilder, sentences) -> Iterator[list[str]]:
    """Add sentences to a builder, yielding any document the cap closes."""
    for s in sentences:
        if (doc := builder.add(s)) is not None:
            yield doc
