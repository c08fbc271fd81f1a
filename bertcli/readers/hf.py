"""Hugging Face datasets (`--dataset`): one document per row; the text is at `--text-field`.

`datasets` is an optional extra. A `save_to_disk` directory is opened with `load_from_disk`
(memory-mapped Arrow: a dataset larger than memory is paged, not loaded); anything else (a name
in the local cache, a directory of data files) goes through `load_dataset(..., streaming=True)`.
Set HF_DATASETS_OFFLINE=1 to make sure nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from bertcli.errors import UsageError
from bertcli.readers.base import MAX_RECORD_BYTES, DocumentBuilder
from bertcli.readers.fields import keys_of, record_documents

SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
BATCH_ROWS = 1024


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UsageError("--dataset needs the datasets package: pip install 'bertcli[datasets]'") from None
    return datasets


def describe(options) -> str:
    parts = [options.dataset] + ([options.dataset_config] if options.dataset_config else []) + [options.dataset_split]
    return "dataset " + ":".join(parts)


def fingerprint(options) -> dict:
    """Enough to tell, on --resume, whether the dataset is the one the run started with."""
    path = Path(options.dataset)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
    return {"path": describe(options), "bytes": size}


def open_dataset(options):
    datasets = _datasets()
    name, path = options.dataset, Path(options.dataset)
    try:
        if path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if options.dataset_split not in ds:
                    raise UsageError(f"--dataset {name} has no split {options.dataset_split!r}; its splits are "
                                     f"{', '.join(ds)}: pass --dataset-split")
                ds = ds[options.dataset_split]
            return ds
        return datasets.load_dataset(name, options.dataset_config, split=options.dataset_split, streaming=True)
    except UsageError:
        raise
    except Exception as e:  # datasets raises many types (not found, offline, bad config, bad split)
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise UsageError(f"--dataset {name}: cannot load it ({reason}); give a save_to_disk directory or a "
                         "dataset in the local Hugging Face cache, with --dataset-config and --dataset-split") from None


def documents(options, ctx) -> Iterator[list[str]]:
    counts = ctx.counts
    field_path = tuple(options.text_field.split("."))
    ds = open_dataset(options)
    columns = ds.column_names
    if columns is not None and field_path[0] not in columns:
        raise UsageError(f"{describe(options)} has no column {field_path[0]!r}; its columns are "
                         f"{', '.join(columns)}: pass --text-field")
    row = 0
    builder = DocumentBuilder(counts, lambda: f"{describe(options)} row {row}")
    first_keys, found = None, 0
    for batch in ds.iter(batch_size=BATCH_ROWS):
        batch_columns = list(batch)
        if first_keys is None:
            first_keys = ", ".join(batch_columns)
        values = batch.get(field_path[0], [None] * len(next(iter(batch.values()), [])))
        for value in values:
            row += 1
            counts.records += 1
            where = f"{describe(options)} row {row}"
            if isinstance(value, str) and len(value) > MAX_RECORD_BYTES:
                counts.skip(where, f"a text longer than {MAX_RECORD_BYTES // 2**20} MiB")
                continue
            documents = record_documents({field_path[0]: value}, field_path, where, counts, ctx, builder)
            if documents is None:
                continue
            found += 1
            yield from documents
    if counts.records and not found:
        raise UsageError(f"{describe(options)}: no row has the field {options.text_field!r}; its columns are "
                         f"{first_keys or keys_of(None)}: pass --text-field")
