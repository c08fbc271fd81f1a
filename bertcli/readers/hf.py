"""Hugging Face datasets (`--dataset`): one document per row; the text is at `--text-field`.

`datasets` is an optional extra. A `save_to_disk` directory is opened with `load_from_disk`
(memory-mapped Arrow: a dataset larger than memory is paged, not loaded); anything else (a name
in the local cache, a directory of data files) goes through `load_dataset(..., streaming=True)`.
Set HF_DATASETS_OFFLINE=1 to make sure nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from bertcli.console import shown
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.fsutil import read_json
from bertcli.readers.base import MAX_RECORD_BYTES, DocumentBuilder
from bertcli.readers.fields import keys_of, record_documents

SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
BATCH_ROWS = 64  # rows per batch: at the 8 MiB record cap, 512 MiB at the very worst
MAX_SCAN_FILES = 10_000  # a data-files directory larger than this is not a dataset (`--dataset /usr`)
DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".tsv", ".txt", ".gz", ".zst", ".bz2", ".xz")


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
    size = sum(f.stat().st_size for f in check_dataset_dir(path)) if path.is_dir() else 0
    return {"path": describe(options), "bytes": size}


def _plain_name(name, where: Path, key: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise DataError(f"{where}: {key} {shown(name, 60)!r} is not a plain file name; a saved dataset names files "
                        "inside its own directory, never ../ or an absolute path — it was edited, save it again")
    return name


def _inside(path: Path, top: Path, where: Path) -> Path:
    """`path` as a real entry of `top`: no symlink out, no link at all."""
    if path.is_symlink() or not path.exists() or path.resolve().parent != top.resolve():
        raise DataError(f"{where}: {path.name} is missing, a symlink or outside {top}; a saved dataset holds its own "
                        "files — copy them in, or save the dataset again")
    return path


def _saved_files(path: Path) -> list[Path]:
    """The files a save_to_disk directory names (state.json's data files, a DatasetDict's splits),
    confined to it as the manifest's shard paths are to a data directory."""
    if (path / "dataset_dict.json").is_file():
        where = path / "dataset_dict.json"
        splits = read_json(where, "dataset dict", max_bytes=1 << 20).get("splits")
        if not isinstance(splits, list) or not splits:
            raise DataError(f"{where}: splits is not a list of split names; save the dataset again")
        files = []
        for split in splits:
            sub = _inside(path / _plain_name(split, where, "split"), path, where)
            files.extend(_saved_files(sub))
        return files
    where = path / "state.json"
    state = read_json(where, "dataset state", max_bytes=16 << 20)
    data_files = state.get("_data_files")
    if not isinstance(data_files, list) or not data_files or not all(isinstance(f, dict) for f in data_files):
        raise DataError(f"{where}: _data_files is not a list of {{\"filename\": ...}} objects; save the dataset again")
    files = [_inside(path / _plain_name(f.get("filename"), where, "filename"), path, where) for f in data_files]
    return files + [p for p in (path / "state.json", path / "dataset_info.json") if p.is_file()]


def check_dataset_dir(path: Path) -> list[Path]:
    """The files of a local --dataset directory, after checking it is one: a save_to_disk directory
    (confined), or a directory of data files that is small enough to be a dataset."""
    if any((path / m).is_file() for m in SAVED_MARKERS):
        return _saved_files(path)
    files = []
    for n, entry in enumerate(path.rglob("*")):
        if n >= MAX_SCAN_FILES:
            raise UsageError(f"--dataset {shown(path)} holds more than {MAX_SCAN_FILES:,} entries and no "
                             "dataset_info.json/state.json; it is not a dataset: give a save_to_disk directory or "
                             "a dataset's directory of data files")
        if entry.is_file() and entry.name.lower().endswith(DATA_SUFFIXES):
            files.append(entry)
    if not files:
        raise UsageError(f"--dataset {shown(path)} holds no data files ({', '.join(DATA_SUFFIXES[:6])}, ...) and is "
                         "not a save_to_disk directory; give a dataset")
    return files


def _validated(ds, name: str):
    """The dataset with its formatting reset and every Arrow table checked in full (offsets, lengths),
    so that a crafted .arrow is an error here and not a crash when a row is read."""
    import pyarrow as pa

    ds = ds.with_format(None)
    try:
        ds.data.table.validate(full=True)
        indices = getattr(ds, "_indices", None)
        if indices is not None:
            indices.table.validate(full=True)
    except (pa.ArrowException, ValueError) as e:
        raise DataError(f"--dataset {shown(name)}: its Arrow data is damaged ({shown(e, 120)}); save it again") from None
    return ds


def open_dataset(options):
    name, path = options.dataset, Path(options.dataset)
    if path.is_dir():
        check_dataset_dir(path)  # before `datasets` is imported (seconds): a wrong directory fails at once
    datasets = _datasets()
    try:
        if path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if options.dataset_split not in ds:
                    raise UsageError(f"--dataset {shown(name)} has no split {shown(options.dataset_split, 60)!r}; its "
                                     f"splits are {shown(', '.join(ds))}: pass --dataset-split")
                ds = ds[options.dataset_split]
            return _validated(ds, name)
        return datasets.load_dataset(name, options.dataset_config, split=options.dataset_split, streaming=True)
    except BertcliError:
        raise
    except Exception as e:  # datasets raises many types (not found, offline, bad config, bad split)
        reason = shown(" ".join(str(e).split()), 300) or type(e).__name__
        raise UsageError(f"--dataset {shown(name)}: cannot load it ({reason}); give a save_to_disk directory or a "
                         "dataset in the local Hugging Face cache, with --dataset-config and --dataset-split") from None


def documents(options, ctx) -> Iterator[list[str]]:
    counts = ctx.counts
    field_path = tuple(options.text_field.split("."))
    ds = open_dataset(options)
    columns = ds.column_names
    if columns is not None and field_path[0] not in columns:
        raise UsageError(f"{shown(describe(options))} has no column {shown(field_path[0], 60)!r}; its columns are "
                         f"{shown(', '.join(map(str, columns)))}: pass --text-field")
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
        raise UsageError(f"{shown(describe(options))}: no row has the field {shown(options.text_field, 60)!r}; its "
                         f"columns are {shown(first_keys or keys_of(None))}: pass --text-field")
