"""`parquet`: one document per row; the text is at `--text-field` (a column, dotted into structs).

Read with pyarrow one row group at a time and converted in slices, so memory holds one row
group's text column, not the file. A column that does not exist is a usage error listing the
columns there are.
"""

from __future__ import annotations

from typing import Iterator

from bertcli.errors import DataError, UsageError
from bertcli.readers.base import MAX_RECORD_BYTES, DocumentBuilder
from bertcli.readers.fields import record_documents

SLICE_ROWS = 1024


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
        try:
            table = parquet.read_row_group(group, columns=[field_path[0]])
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: row group {group} cannot be read ({e}); the file is damaged") from None
        for batch in table.to_batches(max_chunksize=SLICE_ROWS):
            for value in batch.column(0).to_pylist():
                row += 1
                counts.records += 1
                where = f"{path}:row {row}"
                if isinstance(value, str) and len(value) > MAX_RECORD_BYTES:
                    counts.skip(where, f"a text longer than {MAX_RECORD_BYTES // 2**20} MiB")
                    continue
                documents = record_documents({field_path[0]: value}, field_path, where, counts, ctx, builder)
                if documents is None:
                    continue
                found += 1
                yield from documents
        del table
        ctx.progress.bytes_done = ctx.done_before + size * (group + 1) // parquet.num_row_groups
    if counts.records and not found:
        raise UsageError(f"{path}: no row has the field {ctx.options.text_field!r} (columns: {', '.join(columns)}); "
                         "pass --text-field, dotted for a field inside a struct column")
