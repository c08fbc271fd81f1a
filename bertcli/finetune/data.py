"""Labelled examples in, padded batches out: the fine-tuning data.

Read: CSV or TSV (with a header, or without one when every field is given as a column index),
JSON Lines (one object per line), Parquet, or a Hugging Face `save_to_disk` directory. Each
split becomes a list of `Example(text, text_pair, label)`; a missing field is an error that
lists the columns there are. TSV is read without quote handling (GLUE's files contain bare
quotes), CSV with the usual double-quote rules.

Labels: classification labels are strings or integers, mapped to ids in sorted order (numbers
numerically) from the training split; a validation label the training split never has is an
error. Regression labels must be finite numbers.

Encode: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` (token types 0 for A, 1 for B) with the
model's own tokenizer; a pair too long for max_seq_length loses tokens from the end of its
longer segment, one at a time (longest-first, as BERT's run_classifier.py and Hugging Face do),
a single text from its end. Truncated examples are counted.

Batches are padded to their own longest example (never to max_seq_length).
This module does not train or score.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import input_file_problem

TASK_TYPES = ("classification", "regression")
MAX_LABELS = 10_000
MAX_TEXT_CHARS = 1_000_000  # a few hundred tokens is what fits; a megabyte of one cell is a wrong column
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class Example(NamedTuple):
    text: str
    text_pair: str | None
    label: object  # str or int (classification), float (regression), None (an unlabelled test split)


@dataclass(frozen=True)
class Fields:
    """Which columns hold the text, the optional second text and the label (names, or indices for headerless CSV/TSV)."""

    text: str = "text"
    text_pair: str | None = None
    label: str = "label"

    @property
    def headerless(self) -> bool:
        given = [f for f in (self.text, self.text_pair, self.label) if f is not None]
        return all(f.isdigit() for f in given)

    def check(self) -> None:
        given = [f for f in (self.text, self.text_pair, self.label) if f is not None]
        if any(f.isdigit() for f in given) and not self.headerless:
            raise UsageError("--text-field, --text-pair-field and --label-field must be all column names or all column "
                             f"indices (headerless CSV/TSV), not a mix: got {', '.join(given)}")
        if len(set(given)) != len(given):
            raise UsageError(f"--text-field, --text-pair-field and --label-field name the same column twice ({', '.join(given)})")


# --- reading ----------------------------------------------------------------------------------

def _format(path: Path, option: str) -> str:
    if path.is_dir():
        if not any((path / m).is_file() for m in SAVED_MARKERS):
            raise UsageError(f"{option} {path} is a directory but not a Hugging Face save_to_disk dataset "
                             f"(no {' or '.join(SAVED_MARKERS)}); give a .csv, .tsv, .jsonl or .parquet file or such a directory")
        return "dataset"
    name = path.name.lower()
    for suffix, fmt in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise UsageError(f"{option} {path}: unknown format; name it .csv, .tsv, .jsonl or .parquet, or give a "
                     "Hugging Face save_to_disk directory")


def _missing(path: Path, option: str, field: str, flag: str, columns: list[str]) -> UsageError:
    shown = ", ".join(repr(c) for c in columns[:50]) or "none"
    return UsageError(f"{option} {path} has no column {field!r} ({flag}); its columns are {shown}")


def _read_delimited(path: Path, option: str, wanted: dict[str, str], delimiter: str, headerless: bool) -> dict[str, list]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            header = None if headerless else next(reader, None)
            if header is not None:
                header = [h.strip() for h in header]
            index = {}
            for flag, name in wanted.items():
                if headerless:
                    index[flag] = int(name)
                elif name not in header:
                    raise _missing(path, option, name, flag, header)
                else:
                    index[flag] = header.index(name)
            out = {flag: [] for flag in wanted}
            for lineno, row in enumerate(reader, 1 if headerless else 2):
                if not row or row == [""]:
                    continue  # a blank line (GLUE's files end with one)
                for flag, i in index.items():
                    if i >= len(row):
                        if headerless and lineno == 1:
                            raise UsageError(f"{option} {path} has {len(row)} columns; {flag} {i} is out of range "
                                             f"(columns are numbered from 0)")
                        raise DataError(f"{option} {path}, line {lineno}: {len(row)} columns, no column {i} "
                                        f"({flag}); the line is damaged or the file has stray tabs/commas")
                    out[flag].append(row[i])
    except UnicodeDecodeError as e:
        raise DataError(f"{option} {path} is not UTF-8 text (byte {e.start}); convert it, e.g. with iconv") from None
    except csv.Error as e:
        raise DataError(f"{option} {path}: not readable as {'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None
    return out


def _read_jsonl(path: Path, option: str, wanted: dict[str, str]) -> dict[str, list]:
    import json

    out = {flag: [] for flag in wanted}
    try:
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    raise DataError(f"{option} {path}, line {lineno}: not a JSON object; one object per line") from None
                if not isinstance(record, dict):
                    raise DataError(f"{option} {path}, line {lineno}: a JSON {type(record).__name__}, not an object")
                for flag, name in wanted.items():
                    if name not in record:
                        raise _missing(path, option, name, flag, list(record)) if lineno == 1 or not out[flag] else \
                            DataError(f"{option} {path}, line {lineno}: no field {name!r} ({flag})")
                    out[flag].append(record[name])
    except UnicodeDecodeError as e:
        raise DataError(f"{option} {path} is not UTF-8 text (byte {e.start}); convert it") from None
    return out


def _read_parquet(path: Path, option: str, wanted: dict[str, str]) -> dict[str, list]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("reading Parquet needs pyarrow: pip install 'bertcli[parquet]'") from None
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{option} {path}: not a readable Parquet file ({e})") from None
    columns = parquet.schema_arrow.names
    for flag, name in wanted.items():
        if name not in columns:
            raise _missing(path, option, name, flag, columns)
    try:
        table = parquet.read(columns=list(dict.fromkeys(wanted.values())))
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{option} {path}: cannot read it ({e})") from None
    return {flag: table.column(name).to_pylist() for flag, name in wanted.items()}


def _read_dataset(path: Path, option: str, wanted: dict[str, str], split: str) -> dict[str, list]:
    try:
        import datasets
    except ImportError:
        raise UsageError(f"{option} {path} is a Hugging Face dataset; reading it needs pip install 'bertcli[datasets]'") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many types for a damaged directory
        raise DataError(f"{option} {path}: cannot load the dataset ({' '.join(str(e).split())[:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UsageError(f"{option} {path} holds the splits {', '.join(ds)}, none named {split!r}; "
                             f"give the split's own directory, e.g. {path / next(iter(ds), 'SPLIT')}")
        ds = ds[split]
    for flag, name in wanted.items():
        if name not in ds.column_names:
            raise _missing(path, option, name, flag, ds.column_names)
    return {flag: ds[name] for flag, name in wanted.items()}


def read_split(path: Path, option: str, fields: Fields, labelled: bool = True, split: str = "train") -> list[Example]:
    """The examples of one split; `labelled` False (a test split): the label column is optional."""
    path = Path(path)
    fields.check()
    if not path.is_dir() and (problem := input_file_problem(path)):
        raise UsageError(f"{option} {path} {problem}")
    fmt = _format(path, option)
    wanted = {"--text-field": fields.text}
    if fields.text_pair is not None:
        wanted["--text-pair-field"] = fields.text_pair
    if labelled:
        wanted["--label-field"] = fields.label
    if fields.headerless and fmt not in ("csv", "tsv"):
        raise UsageError(f"{option} {path}: column indices ({fields.text}) work for headerless CSV/TSV only; "
                         "give the field names")
    if fmt in ("csv", "tsv"):
        columns = _read_delimited(path, option, wanted, "\t" if fmt == "tsv" else ",", fields.headerless)
    elif fmt == "jsonl":
        columns = _read_jsonl(path, option, wanted)
    elif fmt == "parquet":
        columns = _read_parquet(path, option, wanted)
    else:
        columns = _read_dataset(path, option, wanted, split)
    texts = columns["--text-field"]
    pairs = columns.get("--text-pair-field", [None] * len(texts))
    labels = columns.get("--label-field", [None] * len(texts))
    examples = []
    for n, (text, pair, label) in enumerate(zip(texts, pairs, labels), 1):
        for flag, value in (("--text-field", text), ("--text-pair-field", pair)):
            if flag == "--text-pair-field" and fields.text_pair is None:
                continue
            if not isinstance(value, str):
                raise DataError(f"{option} {path}, example {n}: {flag} {getattr(fields, 'text' if flag == '--text-field' else 'text_pair')!r} "
                                f"is {'missing' if value is None else type(value).__name__}, not a text")
            if len(value) > MAX_TEXT_CHARS:
                raise DataError(f"{option} {path}, example {n}: {flag} holds {len(value):,} characters; is it the right column?")
        examples.append(Example(text, pair, label))
    if not examples:
        raise UsageError(f"{option} {path} holds no examples; give a split with at least one")
    return examples


# --- labels -----------------------------------------------------------------------------------

def _label_key(value, where: str):
    """A classification label as a str or an int (integral floats, e.g. from Parquet, become ints)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    raise DataError(f"{where}: label {str(value)[:40]!r} is {'missing' if value is None else type(value).__name__}; "
                    "classification labels are strings or integers")


def label_names(train: list[Example], where: str) -> list:
    """The training split's labels in id order: sorted, numerically when they are all integers (or integer strings)."""
    keys = {_label_key(e.label, f"{where}, example {n}") for n, e in enumerate(train, 1)}
    if len(keys) < 2:
        raise UsageError(f"{where}: every example has the label {next(iter(keys))!r}; classification needs at least two labels")
    if len(keys) > MAX_LABELS:
        raise UsageError(f"{where}: {len(keys):,} different labels (at most {MAX_LABELS:,}); is --label-field the "
                         "right column, or is the task --task-type regression?")
    if all(isinstance(k, int) for k in keys):
        return sorted(keys)
    if all(isinstance(k, str) for k in keys):
        return sorted(keys, key=lambda k: (0, int(k)) if k.lstrip("-").isdigit() else (1, k))
    raise UsageError(f"{where}: labels mix numbers and strings ({sorted(map(str, keys))[:4]}); give one kind")


def label_ids(examples: list[Example], names: list, where: str, train_where: str) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    index.update({str(name): i for i, name in enumerate(names)})  # "1" in a CSV and 1 in a Parquet file alike
    ids = []
    for n, e in enumerate(examples, 1):
        key = _label_key(e.label, f"{where}, example {n}")
        if key not in index and str(key) not in index:
            raise UsageError(f"{where}, example {n}: label {str(key)[:40]!r} never occurs in {train_where}; its "
                             f"labels are {', '.join(map(str, names[:20]))}")
        ids.append(index[key] if key in index else index[str(key)])
    return ids


def regression_targets(examples: list[Example], where: str) -> list[float]:
    out = []
    for n, e in enumerate(examples, 1):
        try:
            value = float(e.label) if not isinstance(e.label, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value):
            raise UsageError(f"{where}, example {n}: label {str(e.label)[:40]!r} is not a finite number; "
                             "--task-type regression needs numeric labels")
        out.append(value)
    return out


# --- encoding and batches ---------------------------------------------------------------------

@dataclass
class Encoded:
    """One split tokenized: ids per example ([CLS]/[SEP] included), where segment B starts, the targets."""

    ids: list[np.ndarray]
    b_start: np.ndarray  # index of segment B's first token (= length when there is no B)
    targets: np.ndarray | None  # int64 ids or float32 values; None for an unlabelled split
    truncated: int  # examples cut to fit max_seq_length

    def __len__(self) -> int:
        return len(self.ids)


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer list (B on a tie) until both fit in `budget` together."""
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]


def encode(tokenizer, examples: list[Example], max_seq_length: int, targets=None) -> Encoded:
    """Token ids of each example, truncated to max_seq_length; `targets` the label ids or values (or None)."""
    firsts = tokenizer.encode([e.text for e in examples])
    has_pairs = any(e.text_pair is not None for e in examples)
    seconds = tokenizer.encode([e.text_pair or "" for e in examples]) if has_pairs else [None] * len(examples)
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    ids, b_start, truncated = [], np.empty(len(examples), dtype=np.int64), 0
    for i, (a, b) in enumerate(zip(firsts, seconds)):
        if b is None:
            cut = a[:max_seq_length - 2]
            truncated += len(cut) < len(a)
            row = [cls, *cut, sep]
            b_start[i] = len(row)
        else:
            ca, cb = truncate_pair(a, b, max_seq_length - 3)
            truncated += len(ca) + len(cb) < len(a) + len(b)
            row = [cls, *ca, sep]
            b_start[i] = len(row)
            row += [*cb, sep]
        ids.append(np.asarray(row, dtype=np.int64))
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float32 if isinstance(targets[0], float) else np.int64)
    return Encoded(ids, b_start, targets, truncated)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T), T = this batch's longest
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None: no example in the batch is padded
    targets: torch.Tensor | None

    def to(self, device) -> "Batch":
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        return Batch(move(self.input_ids), move(self.token_type_ids), move(self.attention_mask), move(self.targets))


def collate(split: Encoded, indices: np.ndarray, pad_id: int) -> Batch:
    """The examples at `indices`, padded to the longest of them."""
    lengths = np.array([len(split.ids[i]) for i in indices])
    T = int(lengths.max())
    input_ids = np.full((len(indices), T), pad_id, dtype=np.int64)
    positions = np.arange(T)
    for row, i in enumerate(indices):
        input_ids[row, :lengths[row]] = split.ids[i]
    token_type_ids = ((positions >= split.b_start[indices, None]) & (positions < lengths[:, None])).astype(np.int64)
    padded = bool((lengths < T).any())
    attention_mask = torch.from_numpy((positions < lengths[:, None]).astype(np.int64)) if padded else None
    targets = None if split.targets is None else torch.from_numpy(split.targets[indices])
    return Batch(torch.from_numpy(input_ids), torch.from_numpy(token_type_ids), attention_mask, targets)
