"""`lines`: BERT's own layout, one sentence per line, a blank line between documents.

Every file ends a document; runs of blank lines never make empty documents.
"""

from __future__ import annotations

from typing import Iterator

from bertcli.readers.base import DocumentBuilder
from bertcli.readers.streams import read_lines


def documents(path, ctx) -> Iterator[list[str]]:
    counts = ctx.counts
    lineno = 0
    builder = DocumentBuilder(counts, lambda: f"{path}:{lineno}")
    for lineno, line in read_lines(path, counts, ctx.encoding, ctx.strict, ctx.progress, ctx.done_before):
        if line:
            if (doc := builder.add(line)) is not None:
                yield doc
        elif (doc := builder.finish()) is not None:
            yield doc
    counts.records += lineno
    if (doc := builder.finish()) is not None:
        yield doc
