"""`jsonl`: JSON Lines, one record (one document) per line; the text is at `--text-field`.

A line that is not valid JSON, or a record without the field, is skipped and counted (the
warning names the first file:line), or an error under `--strict`. A field missing from every
record of a file is a usage error that lists the keys the records do have.
"""

from __future__ import annotations

import json
from typing import Iterator

from bertcli.console import shown
from bertcli.errors import DataError, UsageError
from bertcli.readers.base import DocumentBuilder
from bertcli.readers.fields import keys_of, record_documents
from bertcli.readers.streams import read_lines


def documents(path, ctx) -> Iterator[list[str]]:
    counts, options = ctx.counts, ctx.options
    field_path = tuple(options.text_field.split("."))
    lineno = 0
    builder = DocumentBuilder(counts, lambda: f"{path}:{lineno}")
    first_keys = None
    found = 0
    for lineno, line in read_lines(path, counts, ctx.encoding, ctx.strict, ctx.progress, ctx.done_before):
        if not line:
            continue
        counts.records += 1
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else shown(e, 120)
            if counts.records == 1 and line.startswith("[") and not isinstance(e, RecursionError):
                raise UsageError(f"{shown(path)} is one JSON array, not JSON Lines (one object per line); "
                                 "convert it, e.g. jq -c '.[]'") from None
            if ctx.strict:
                raise DataError(f"{where}: not valid JSON ({why}); fix the line or drop --strict to skip it") from None
            counts.skip(where, "not valid JSON")
            continue
        if first_keys is None:
            first_keys = keys_of(record)
        documents = record_documents(record, field_path, where, counts, ctx, builder)
        if documents is None:
            continue
        found += 1
        yield from documents
    if counts.records and not found and first_keys is not None:
        raise UsageError(f"{shown(path)}: no record has the field {shown(options.text_field, 60)!r}; the first record's keys are "
                         f"{first_keys}: pass --text-field (dotted for nested keys, e.g. meta.text)")
