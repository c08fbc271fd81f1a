"""`text`: free text. Blank lines separate paragraphs; the segmenter splits them into sentences.

Hard-wrapped lines of a paragraph are joined with a space before segmenting, as books and
e-mails wrap at ~70 columns. Each paragraph is a document, or, with `--document-per-file`, each
file is one document of all its paragraphs.
"""

from __future__ import annotations

from typing import Iterator

from bertcli.readers.base import MAX_RECORD_BYTES, DocumentBuilder, emit
from bertcli.readers.streams import read_lines


def documents(path, ctx) -> Iterator[list[str]]:
    counts, segment = ctx.counts, ctx.segmenter.split
    paragraph: list[str] = []
    size = 0
    start = lineno = 0
    builder = DocumentBuilder(counts, lambda: f"{path}:{start}")
    for lineno, line in read_lines(path, counts, ctx.encoding, ctx.strict, ctx.progress, ctx.done_before):
        if line:
            if not paragraph:
                start = lineno
            paragraph.append(line)
            size += len(line)
            if size < MAX_RECORD_BYTES:
                continue
            # A "paragraph" of megabytes has no blank lines at all: segment what there is so far.
        if paragraph:
            yield from emit(builder, segment(" ".join(paragraph)))
            paragraph, size = [], 0
            if not line and not ctx.options.document_per_file and (doc := builder.finish()) is not None:
                yield doc
    if paragraph:
        yield from emit(builder, segment(" ".join(paragraph)))
    counts.records += lineno
    if (doc := builder.finish()) is not None:
        yield doc
