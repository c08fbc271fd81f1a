"""Find the text of a record (jsonl, parquet, datasets) by a dotted field path, and turn it into documents."""

from __future__ import annotations

import re

from bertcli.console import shown
from bertcli.readers.base import emit

_MISSING = object()
# JSON may spell lone UTF-16 surrogates ("\\ud800"); Python keeps them in a str, but no UTF-8 tokenizer can
# encode one. They are replaced (U+FFFD) and counted with the invalid bytes of the other formats.
_SURROGATES = re.compile("[\ud800-\udfff]")


def lookup(record, path: tuple[str, ...]):
    """The value at a dotted path (`meta.body.text`), or _MISSING if any step is absent."""
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def text_of(record, path: tuple[str, ...], where: str, counts, strict: bool, segmenter) -> list[str] | None:
    """The record's sentences; None when it has to be skipped (counted, or an error if strict)."""
    value = lookup(record, path)
    field = ".".join(path)
    if isinstance(value, str):
        if not value.isascii() and _SURROGATES.search(value):
            if strict:
                from bertcli.errors import DataError
                raise DataError(f"{where}: the text holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not "
                                "text; fix the record or drop --strict to replace it")
            value = _SURROGATES.sub("\ufffd", value)
            counts.invalid_lines += 1
            counts.first_invalid = counts.first_invalid or where
        if not value.strip():
            counts.empty_records += 1
            return []
        return segmenter.split_text(value)
    reason = f"no field {shown(field, 60)!r}" if value is _MISSING or value is None else \
        f"field {shown(field, 60)!r} is {type(value).__name__}, not a string"
    if strict:
        from bertcli.errors import DataError
        raise DataError(f"{where}: {reason}; fix the record, pass the right --text-field, or drop --strict to skip it")
    counts.skip(where, reason)
    return None


def keys_of(record) -> str:
    """Top-level keys, for a message that says which fields there are."""
    if isinstance(record, dict):
        return shown(", ".join(shown(k, 40) for k in list(record)[:20])) or "(none)"
    return f"(a {type(record).__name__}, not an object)"


def record_documents(record, path: tuple[str, ...], where: str, counts, ctx, builder) -> list[list[str]] | None:
    """The documents one record (a JSON object, a Parquet or dataset row) closes: its text split into
    sentences and added to `builder`; None when the record has no usable text (counted by text_of).
    One record's documents are few and bounded by the record cap, so they are returned as a list."""
    sentences = text_of(record, path, where, counts, ctx.strict, ctx.segmenter)
    if sentences is None:
        return None
    documents = list(emit(builder, sentences))
    if (doc := builder.finish()) is not None:
        documents.append(doc)
    return documents
