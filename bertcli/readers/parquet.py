"""`parquet`: one document per row; the text is at `--text-field` (a column, dotted into structs).

Read with pyarrow in slices of about 64 MB (from the row group's metadata), so memory holds a
slice of the text column, not a row group or the file; a text over the record cap is skipped
by its Arrow length, before it becomes a Python string. A column that does not exist is a usage error listing the
columns there are.
"""

from __future__ import annotations

from typing import Iterator

from bertcli.console import shown
from bertcli.errors import DataError, UsageError
from bertcli.readers.base import MAX_RECORD_BYTES, DocumentBuilder
from bertcli.readers.fields import record_documents

SLICE_ROWS = 1024
SLICE_BYTES = 64 << 20  # a slice holds about this much text, whatever the row size
# A column chunk that inflates more than this many times, to more than BOMB_BYTES, is refused: text
# compresses 3-10 fold; 150 x 10 MB of one letter in a 50 KB file decompresses a 1.5 GB page whole,
# before any row can be looked at (pyarrow cannot read a page in parts).
BOMB_RATIO, BOMB_BYTES = 1000, 64 << 20
_TOO_LONG, _INVALID = object(), object()


def _bomb_problem(parquet, group: int, column: str) -> str | None:
    meta = parquet.metadata.row_group(group)
    for i in range(meta.num_columns):
        chunk = meta.column(i)
        if chunk.path_in_schema.split(".")[0] != column:
            continue
        inflated, stored = chunk.total_uncompressed_size, max(chunk.total_compressed_size, 1)
        if inflated > BOMB_BYTES and inflated > BOMB_RATIO * stored:
            return (f"row group {group} stores {stored:,} bytes of column {shown(column, 60)!r} that decompress to "
                    f"{inflated:,} ({inflated // stored:,}-fold): a decompression bomb, or texts far over the "
                    f"{MAX_RECORD_BYTES // 2**20} MiB record cap; rewrite the file without them")
    return None


def _slice_rows(path, parquet, group: int, column: str, pq) -> int:
    """Rows per slice so that a slice decodes to about SLICE_BYTES, from the metadata. A dictionary-
    encoded text column may hold one 10 MB text repeated in every row of a file of a few KB: its
    rows are bounded by the longest dictionary entry, read first (one row with the dictionary kept)."""
    meta = parquet.metadata.row_group(group)
    rows = max(meta.num_rows, 1)
    per_row = meta.total_byte_size / rows
    names = [meta.column(i).path_in_schema for i in range(meta.num_columns)]
    if column in names and meta.column(names.index(column)).has_dictionary_page:
        import pyarrow.compute as pc

        probe = pq.ParquetFile(path, read_dictionary=[column])
        first = next(probe.iter_batches(batch_size=1, row_groups=[group], columns=[column], use_threads=False), None)
        values = first.column(0) if first is not None else None
        if values is not None and hasattr(values, "dictionary") and len(values.dictionary):
            per_row = max(per_row, pc.max(pc.binary_length(values.dictionary)).as_py() or 0)
    return int(max(1, min(SLICE_ROWS, SLICE_BYTES // max(per_row, 1))))


def _values(parquet, group: int, column: str, path, pa, pq):
    """The column's values in one row group, a slice at a time. A text over the record cap is
    measured in Arrow and never turned into a Python string; a text that is not valid UTF-8 is
    reported as such (pyarrow does not check it on reading)."""
    import pyarrow.compute as pc

    if problem := _bomb_problem(parquet, group, column):
        raise DataError(f"{path}: {problem}")
    try:
        batches = parquet.iter_batches(batch_size=_slice_rows(path, parquet, group, column, pq), row_groups=[group],
                                       columns=[column],
                                       use_threads=False)
        for batch in batches:
            values = batch.column(0)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                yield from values.to_pylist()
                continue
            lengths = pc.binary_length(values).to_pylist()
            if max((n or 0 for n in lengths), default=0) <= MAX_RECORD_BYTES:
                try:
                    yield from values.to_pylist()  # the fast path: every text fits and is valid
                    continue
                except UnicodeDecodeError:
                    pass
            raw = values.cast(pa.large_binary() if pa.types.is_large_string(values.type) else pa.binary())
            for i, n in enumerate(lengths):
                if n is None or n > MAX_RECORD_BYTES:
                    yield None if n is None else _TOO_LONG
                    continue
                try:
                    yield raw[i].as_py().decode("utf-8")
                except UnicodeDecodeError:
                    yield _INVALID
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: row group {group} cannot be read ({shown(e, 200)}); the file is damaged") from None


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("reading Parquet needs pyarrow: pip install 'bertcli[parquet]'") from None
    return pq


def documents(path, ctx) -> Iterator[list[str]]:
    pq = _pyarrow_parquet()
    import pyarrow as pa

    counts = ctx.counts
    field_path = tuple(ctx.options.text_field.split("."))
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e}); check the file or its --input-format") from None
    columns = parquet.schema_arrow.names
    if field_path[0] not in columns:
        raise UsageError(f"{path} has no column {field_path[0]!r}; its columns are {', '.join(columns)}: "
                         "pass --text-field")
    row = found = 0
    builder = DocumentBuilder(counts, lambda: f"{path}:row {row}")
    size = path.stat().st_size
    for group in range(parquet.num_row_groups):
        for value in _values(parquet, group, field_path[0], path, pa, pq):
            row += 1
            counts.records += 1
            where = f"{path}:row {row}"
            if value is _TOO_LONG:
                counts.skip(where, f"a text longer than {MAX_RECORD_BYTES // 2**20} MiB")
                continue
            if value is _INVALID:
                if ctx.strict:
                    raise DataError(f"{where}: the text is not valid UTF-8; fix the file or drop --strict to skip it")
                counts.skip(where, "a text that is not valid UTF-8")
                continue
            documents = record_documents({field_path[0]: value}, field_path, where, counts, ctx, builder)
            if documents is None:
                continue
            found += 1
            yield from documents
        ctx.progress.bytes_done = ctx.done_before + size * (group + 1) // parquet.num_row_groups
    if counts.records and not found:
        raise UsageError(f"{path}: no row has the field {ctx.options.text_field!r} (columns: {', '.join(columns)}); "
                         "pass --text-field, dotted for a field inside a struct column")
